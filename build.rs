// Compiles this project's own protos (schema/*.proto) with a vendored protoc: no system protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=schema");
    prost_build::compile_protos(
        &["schema/etcd_meta.proto", "schema/passthrough.proto"],
        &["schema"],
    )?;
    Ok(())
}
