//! The tools around the relay: the market simulator, the subscriber load
//! generator, the lab and the demo. They depend on the relay's library
//! (its wire codec, config and server); the relay never imports them
//! (tests/architecture.rs holds the allowed edges).
//!
//! | module | owns |
//! |---|---|
//! | [`sim`] | the market simulator engine behind `feed-simulator` and `demo` |
//! | [`zipf`] | the Zipf sampler the simulator and the load generator share |
//! | [`load`] | the subscriber load generator behind `tickrelay load`: flags, clients, stats, report |
//! | [`tap`] | what the lab watches of a load client: socket bytes, quotes seen |
//! | [`lab`] | `tickrelay lab`: every transport measured on the same watchlists |
//! | [`token`] | `tickrelay token`: mints a user's token (HS256) with the relay's claims |
//! | [`demo`] | `tickrelay demo`: relay and simulator in one process; `demo --lab` |

pub mod demo;
pub mod lab;
pub mod load;
pub mod sim;
pub mod tap;
pub mod token;
pub mod zipf;
