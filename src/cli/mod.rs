pub mod https;
pub mod task;
