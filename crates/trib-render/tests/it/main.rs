//! trib-render's integration tests: golden renders of the example templates, one test per
//! static check error kind, consent refusal, the guards on a person's data (URL schemes,
//! `raw`, the preheader), and a test send to a real SMTP server.

mod check;
mod consent;
mod golden;
mod safety;
mod smtp;
mod support;
