//! nvme_sim
