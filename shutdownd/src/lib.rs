//! shutdownd
