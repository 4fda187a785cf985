//! One module per delivery paradigm. Each turns the table (and, for the
//! streaming ones, the fan-out hub) into its protocol and nothing more.

pub mod direct;
pub mod pacer;
pub mod poll;
pub mod slow;
pub mod snapshot;
pub mod sse;
pub mod stream;
pub mod task;
pub mod ws;
pub mod wsframe;
pub mod wsmsg;
