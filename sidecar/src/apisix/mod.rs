//! APISIX's route, upstream and ssl objects as the Admin API accepts them: pure
//! parsing and validation, no I/O.

pub mod merge;
pub mod route;
pub mod secrets;
pub mod shared;
pub mod ssl;
pub mod table;
pub mod upstream;
pub mod vars;
