//! The driver-side helper: implement [`ShutdownHandler`], call `serve`.
