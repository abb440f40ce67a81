//! pcid
