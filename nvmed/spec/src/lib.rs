//! nvme_spec
