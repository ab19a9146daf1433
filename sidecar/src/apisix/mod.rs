//! APISIX's route and upstream objects as the Admin API accepts them: pure
//! parsing and validation, no I/O.

pub mod merge;
pub mod route;
pub mod secrets;
pub mod shared;
pub mod table;
pub mod upstream;
pub mod vars;
