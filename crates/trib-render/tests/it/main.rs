//! trib-render's integration tests: golden renders of the example templates, one test per
//! static check error kind, consent refusal, and a test send to a real SMTP server.

mod check;
mod consent;
mod golden;
mod smtp;
mod support;
