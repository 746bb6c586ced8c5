# Sourced by scripts/testbed, scripts/test and scripts/demo: installs what is missing, idempotently.
# Sets ROOT (the repository) and VENV (the project-local Python environment).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"

log() { printf '[setup] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# apt_install [--apt-option...] PACKAGE...: installs those not installed yet.
apt_install() {
    local opts=() missing=()
    while [[ "${1:-}" == --* ]]; do opts+=("$1"); shift; done
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "apt: installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${opts[@]}" "${missing[@]}" >/dev/null
}

setup_system() {
    # etcd for the testbed; protobuf-compiler for the pulsar crate's build script; libssl-dev and
    # pkg-config for OpenSSL, which librdkafka (TLS to Kafka) and the pulsar crate link.
    apt_install etcd-server etcd-client protobuf-compiler curl libssl-dev pkg-config
    # promtool, which checks and unit-tests deploy/prometheus/ (tests/e2e/test_alerts.py); without
    # recommends, which would add the node exporter and its service.
    apt_install --no-install-recommends prometheus
}

setup_browser() {
    # Debian's Chromium, headless, for the status page's browser test.
    apt_install chromium
}

setup_venv() {
    local req="$ROOT/scripts/lib/requirements.txt" stamp="$VENV/.requirements.sha256"
    local want
    want="$(sha256sum "$req" | cut -d' ' -f1)"
    if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    log "python: installing scripts/lib/requirements.txt into .venv"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$req"
    echo "$want" > "$stamp"
}

setup_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
    fi
    command -v cargo >/dev/null 2>&1 || { log "cargo not found: install a Rust toolchain (rustup)"; return 1; }
}
