//! Shutdown order: children before their parent bridges.
//!
//! pcid reports each function's parent bridge ([`DeviceInfo::parent`]). A parent
//! must not be shut down while a device behind it is still shutting down (a root
//! port that stops forwarding before its NVMe child has finished would cut the
//! child off mid-shutdown). The plan records, for every device, which listed
//! devices are its children, and a children-first total order used by the
//! sequential mode.
//!
//! Parent links form a forest when the topology is sane. A wrong description can
//! contain a cycle (A behind B behind A); waiting along such a cycle would never
//! end, which is how asynchronous shutdown hung on Linux. Cycles are detected,
//! reported, and their edges dropped so every device in the cycle is shut down
//! without waiting for the others in it.
//!
//! Only edges between *listed* devices constrain the order: a parent that has no
//! driver process (a bridge nobody drives) is not in the list and has nothing to
//! shut down.

use std::collections::HashMap;

use pcid_interface::function::PciAddress;
use pcid_interface::protocol::DeviceInfo;

/// Error building a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The device list names the same address twice.
    #[error("device list names {0} more than once")]
    DuplicateAddress(PciAddress),
}

/// The devices to shut down and the order constraints between them.
#[derive(Debug, Clone)]
pub struct Plan {
    devices: Vec<DeviceInfo>,
    parent: Vec<Option<usize>>,
    children: Vec<Vec<usize>>,
    order: Vec<usize>,
    cycles: Vec<Vec<PciAddress>>,
}

impl Plan {
    /// Builds the plan for `devices` (in pcid's order).
    pub fn new(devices: Vec<DeviceInfo>) -> Result<Self, PlanError> {
        let mut index = HashMap::with_capacity(devices.len());
        for (i, d) in devices.iter().enumerate() {
            if index.insert(d.address, i).is_some() {
                return Err(PlanError::DuplicateAddress(d.address));
            }
        }
        let mut parent: Vec<Option<usize>> = devices
            .iter()
            .map(|d| d.parent.and_then(|p| index.get(&p).copied()))
            .collect();

        let cycles = break_cycles(&mut parent);
        let cycles = cycles
            .into_iter()
            .map(|c| c.into_iter().map(|i| devices[i].address).collect())
            .collect();

        let mut children = vec![Vec::new(); devices.len()];
        for (i, p) in parent.iter().enumerate() {
            if let Some(p) = *p {
                children[p].push(i);
            }
        }

        // Depth below the root of each device's tree (parent links are acyclic now).
        let depth: Vec<usize> = (0..devices.len())
            .map(|mut i| {
                let mut d = 0;
                while let Some(p) = parent[i] {
                    d += 1;
                    i = p;
                }
                d
            })
            .collect();
        let mut order: Vec<usize> = (0..devices.len()).collect();
        order.sort_by(|&a, &b| {
            depth[b]
                .cmp(&depth[a])
                .then(devices[a].address.cmp(&devices[b].address))
        });

        Ok(Self {
            devices,
            parent,
            children,
            order,
            cycles,
        })
    }

    /// The devices, in the order given to [`Plan::new`].
    pub fn devices(&self) -> &[DeviceInfo] {
        &self.devices
    }

    /// Index of the listed parent of device `i` (after cycle breaking).
    pub fn parent(&self, i: usize) -> Option<usize> {
        self.parent.get(i).copied().flatten()
    }

    /// Indices of the listed devices directly behind device `i`.
    pub fn children(&self, i: usize) -> &[usize] {
        self.children.get(i).map(Vec::as_slice).unwrap_or(&[])
    }

    /// All device indices, children before parents (deepest first, then by address).
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// Parent cycles found in the device list; their edges were ignored.
    pub fn cycles(&self) -> &[Vec<PciAddress>] {
        &self.cycles
    }
}

/// Finds every cycle of parent links, removes the links inside it, and returns
/// the members of each cycle (in parent-link order starting from the lowest index).
fn break_cycles(parent: &mut [Option<usize>]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath(usize),
        Done,
    }
    let mut mark = vec![Mark::New; parent.len()];
    let mut cycles = Vec::new();
    for start in 0..parent.len() {
        if mark[start] != Mark::New {
            continue;
        }
        let mut path = Vec::new();
        let mut cur = Some(start);
        while let Some(i) = cur {
            match mark[i] {
                Mark::Done => break,
                Mark::OnPath(pos) => {
                    let mut cycle: Vec<usize> = path[pos..].to_vec();
                    let min_pos = cycle
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, &v)| v)
                        .map_or(0, |(p, _)| p);
                    cycle.rotate_left(min_pos);
                    cycles.push(cycle);
                    break;
                }
                Mark::New => {
                    mark[i] = Mark::OnPath(path.len());
                    path.push(i);
                    cur = parent[i];
                }
            }
        }
        for &i in &path {
            mark[i] = Mark::Done;
        }
    }
    for cycle in &cycles {
        for &i in cycle {
            parent[i] = None;
        }
    }
    cycles
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcid_interface::protocol::{DriverState, ShutdownSupport};

    pub(crate) fn dev(addr: &str, parent: Option<&str>) -> DeviceInfo {
        DeviceInfo {
            address: addr.parse().unwrap(),
            parent: parent.map(|p| p.parse().unwrap()),
            driver: "nvmed".into(),
            support: ShutdownSupport::TwoPhase,
            pid: 1,
            state: DriverState::Running,
        }
    }

    #[test]
    fn children_come_before_parents() {
        let plan = Plan::new(vec![
            dev("0000:00:1c.0", None),
            dev("0000:01:00.0", Some("0000:00:1c.0")),
            dev("0000:02:00.0", Some("0000:01:00.0")),
            dev("0000:00:04.0", None),
        ])
        .unwrap();
        assert_eq!(plan.order(), &[2, 1, 3, 0]);
        assert_eq!(plan.children(0), &[1]);
        assert_eq!(plan.parent(2), Some(1));
        assert!(plan.cycles().is_empty());
    }

    #[test]
    fn unlisted_parent_is_no_constraint() {
        let plan = Plan::new(vec![dev("0000:01:00.0", Some("0000:00:1c.0"))]).unwrap();
        assert_eq!(plan.parent(0), None);
    }

    #[test]
    fn cycles_are_detected_and_broken() {
        let plan = Plan::new(vec![
            dev("0000:01:00.0", Some("0000:02:00.0")),
            dev("0000:02:00.0", Some("0000:01:00.0")),
            dev("0000:03:00.0", Some("0000:01:00.0")),
            dev("0000:04:00.0", Some("0000:04:00.0")),
        ])
        .unwrap();
        let a = |s: &str| s.parse::<PciAddress>().unwrap();
        assert_eq!(
            plan.cycles(),
            &[
                vec![a("0000:01:00.0"), a("0000:02:00.0")],
                vec![a("0000:04:00.0")]
            ]
        );
        assert_eq!(plan.parent(0), None);
        assert_eq!(plan.parent(1), None);
        assert_eq!(plan.parent(3), None);
        // The edge into the cycle stays: 03 still goes before 01.
        assert_eq!(plan.parent(2), Some(0));
        let pos = |i| plan.order().iter().position(|&x| x == i).unwrap();
        assert!(pos(2) < pos(0));
    }

    #[test]
    fn duplicate_address_is_an_error() {
        let err = Plan::new(vec![dev("0000:01:00.0", None), dev("0000:01:00.0", None)]);
        assert!(matches!(err, Err(PlanError::DuplicateAddress(_))));
    }
}
