//! nvmed
