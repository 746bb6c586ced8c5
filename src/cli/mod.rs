pub mod failover;
pub mod generate;
pub mod https;
pub mod reapply;
pub mod switchover;
pub mod task;
pub mod verify;
