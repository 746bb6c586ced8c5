pub mod https;
pub mod task;
pub mod verify;
