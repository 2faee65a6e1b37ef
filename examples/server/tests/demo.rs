//! The example's sign-in on tokio's paused clock: codes work once and for 10 minutes,
//! sessions end after 12 idle hours and at sign-out (the module's own tests).

#[allow(dead_code)] // the server uses the rest
#[path = "../demo.rs"]
mod demo;
