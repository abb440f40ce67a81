//! Shutdown order: consumers before their providers.
//!
//! The plan holds everything that takes part in the shutdown — PCI devices
//! (through their drivers) and participants (daemons that hold state for
//! devices, such as a file system; PROTOCOL.md §14) — and the order
//! constraints between them: a **consumer** must have its final outcome
//! before any of its **providers** is asked to begin.
//!
//! * A device behind a listed parent bridge is a consumer of that bridge
//!   (pcid reports each function's parent, [`DeviceInfo::parent`]). A root
//!   port that stops forwarding before its NVMe child has finished would cut
//!   the child off mid-shutdown.
//! * A participant is a consumer of the providers it registered: a device
//!   (the disk a file system is on), every device, or another participant
//!   (a volume manager under a file system). A file system flushed after its
//!   disk has shut down has made nothing safe.
//!
//! So a shutdown runs file system → disk → bridge. Only providers that are
//! listed constrain the order: a parent that has no driver process (a bridge
//! nobody drives) has nothing to shut down; a provider a participant names
//! that is not listed is recorded in [`Plan::unresolved`] and ignored.
//!
//! Constraints can form a cycle (A behind B behind A, or a participant that
//! names a participant that names it); waiting along a cycle would never
//! end, which is how asynchronous shutdown hung on Linux. Every cycle is
//! detected (strongly connected components), reported ([`Plan::cycles`],
//! one closed path per component) and broken: the constraints inside the
//! component are dropped, so its members are shut down without waiting for
//! each other, while constraints into and out of it stay.

use std::collections::HashMap;

use pcid_interface::function::PciAddress;
use pcid_interface::protocol::{
    DeviceInfo, DriverState, ParticipantInfo, Provider, ShutdownSupport,
};

/// Error building a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The device list names the same address twice.
    #[error("device list names {0} more than once")]
    DuplicateAddress(PciAddress),
    /// Two participants have the same id or the same name.
    #[error("participant list names {0} more than once")]
    DuplicateParticipant(String),
}

/// What the plan orders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A PCI device, shut down through its driver.
    Device(DeviceInfo),
    /// A participant (PROTOCOL.md §14).
    Participant(ParticipantInfo),
}

impl Subject {
    /// The driver's or participant's name.
    pub fn name(&self) -> &str {
        match self {
            Subject::Device(d) => &d.driver,
            Subject::Participant(p) => &p.name,
        }
    }

    /// What it declared.
    pub fn support(&self) -> ShutdownSupport {
        match self {
            Subject::Device(d) => d.support,
            Subject::Participant(p) => p.support,
        }
    }

    /// Its state as pcid reported it.
    pub fn state(&self) -> DriverState {
        match self {
            Subject::Device(d) => d.state,
            Subject::Participant(p) => p.state,
        }
    }

    /// The device's address (`None` for a participant).
    pub fn address(&self) -> Option<PciAddress> {
        match self {
            Subject::Device(d) => Some(d.address),
            Subject::Participant(_) => None,
        }
    }

    /// The participant's id (`None` for a device).
    pub fn participant_id(&self) -> Option<u32> {
        match self {
            Subject::Device(_) => None,
            Subject::Participant(p) => Some(p.id),
        }
    }

    /// `device` or `participant`.
    pub fn kind(&self) -> &'static str {
        match self {
            Subject::Device(_) => "device",
            Subject::Participant(_) => "participant",
        }
    }

    /// How messages name it: the address, or `participant <name>`.
    pub fn label(&self) -> String {
        match self {
            Subject::Device(d) => d.address.to_string(),
            Subject::Participant(p) => format!("participant {}", p.name),
        }
    }
}

/// The subjects to shut down and the order constraints between them.
#[derive(Debug, Clone)]
pub struct Plan {
    subjects: Vec<Subject>,
    /// Device index → its listed parent (after cycle breaking).
    parent: Vec<Option<usize>>,
    providers: Vec<Vec<usize>>,
    consumers: Vec<Vec<usize>>,
    order: Vec<usize>,
    cycles: Vec<Vec<usize>>,
    unresolved: Vec<String>,
}

impl Plan {
    /// Builds the plan for `devices` alone (in pcid's order).
    pub fn new(devices: Vec<DeviceInfo>) -> Result<Self, PlanError> {
        Self::with_participants(devices, Vec::new())
    }

    /// Builds the plan for `devices` and `participants`. Subjects are
    /// indexed participants first (in the given order), then devices.
    pub fn with_participants(
        devices: Vec<DeviceInfo>,
        participants: Vec<ParticipantInfo>,
    ) -> Result<Self, PlanError> {
        let mut by_address = HashMap::with_capacity(devices.len());
        let mut by_name = HashMap::with_capacity(participants.len());
        let mut ids = HashMap::with_capacity(participants.len());
        let np = participants.len();
        for (i, p) in participants.iter().enumerate() {
            if by_name.insert(p.name.clone(), i).is_some() {
                return Err(PlanError::DuplicateParticipant(p.name.clone()));
            }
            if ids.insert(p.id, i).is_some() {
                return Err(PlanError::DuplicateParticipant(format!("#{}", p.id)));
            }
        }
        for (k, d) in devices.iter().enumerate() {
            if by_address.insert(d.address, np + k).is_some() {
                return Err(PlanError::DuplicateAddress(d.address));
            }
        }
        let mut subjects: Vec<Subject> =
            participants.into_iter().map(Subject::Participant).collect();
        subjects.extend(devices.into_iter().map(Subject::Device));
        let n = subjects.len();

        // Edges consumer → provider.
        let mut providers: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut unresolved = Vec::new();
        for (i, s) in subjects.iter().enumerate() {
            match s {
                Subject::Device(d) => {
                    if let Some(&p) = d.parent.and_then(|p| by_address.get(&p)) {
                        providers[i].push(p);
                    }
                }
                Subject::Participant(p) => {
                    for provider in &p.providers {
                        match provider {
                            Provider::Device(a) => match by_address.get(a) {
                                Some(&j) => providers[i].push(j),
                                None => unresolved.push(format!(
                                    "participant {} names device {a}, which pcid does not list",
                                    p.name
                                )),
                            },
                            Provider::Participant(name) => match by_name.get(name) {
                                Some(&j) => providers[i].push(j),
                                None => unresolved.push(format!(
                                    "participant {} names participant {name}, which is not registered",
                                    p.name
                                )),
                            },
                            Provider::AllDevices => providers[i].extend(np..n),
                        }
                    }
                }
            }
            providers[i].sort_unstable();
            providers[i].dedup();
        }

        let cycles = break_cycles(&mut providers);

        let mut consumers = vec![Vec::new(); n];
        for (i, ps) in providers.iter().enumerate() {
            for &p in ps {
                consumers[p].push(i);
            }
        }
        let parent: Vec<Option<usize>> = (0..n)
            .map(|i| match &subjects[i] {
                Subject::Device(d) => d
                    .parent
                    .and_then(|p| by_address.get(&p).copied())
                    .filter(|p| providers[i].contains(p)),
                Subject::Participant(_) => None,
            })
            .collect();
        // Depth below the root of each device's bridge tree (acyclic now).
        let depth: Vec<usize> = (0..n)
            .map(|mut i| {
                let mut d = 0;
                while let Some(p) = parent[i] {
                    d += 1;
                    i = p;
                }
                d
            })
            .collect();
        let order = topological(&subjects, &consumers, &providers, &depth);

        Ok(Self {
            subjects,
            parent,
            providers,
            consumers,
            order,
            cycles,
            unresolved,
        })
    }

    /// Participants first, then devices (the indices every method uses).
    pub fn subjects(&self) -> &[Subject] {
        &self.subjects
    }

    /// Index of the listed parent bridge of device `i` (after cycle breaking).
    pub fn parent(&self, i: usize) -> Option<usize> {
        self.parent.get(i).copied().flatten()
    }

    /// What `i` must be done before (its providers), after cycle breaking.
    pub fn providers(&self, i: usize) -> &[usize] {
        self.providers.get(i).map(Vec::as_slice).unwrap_or(&[])
    }

    /// What must be done before `i` begins (its consumers): the devices
    /// behind a bridge, the participants on a disk.
    pub fn consumers(&self, i: usize) -> &[usize] {
        self.consumers.get(i).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every subject, consumers before providers: participants before
    /// devices, deeper devices before shallower, then by address.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// The cycles found, each a closed path of subject indices (the
    /// constraints inside each were dropped).
    pub fn cycles(&self) -> &[Vec<usize>] {
        &self.cycles
    }

    /// The cycles as labels, each closing on its first member
    /// (`["0000:01:00.0", "0000:02:00.0", "0000:01:00.0"]`).
    pub fn cycle_labels(&self) -> Vec<Vec<String>> {
        self.cycles
            .iter()
            .map(|c| {
                let mut l: Vec<String> = c.iter().map(|&i| self.subjects[i].label()).collect();
                if let Some(first) = l.first().cloned() {
                    l.push(first);
                }
                l
            })
            .collect()
    }

    /// Providers participants named that are not listed (ignored).
    pub fn unresolved(&self) -> &[String] {
        &self.unresolved
    }
}

/// Kahn's algorithm over the acyclic constraints: a subject is placed once
/// all its consumers are; among those ready, participants first, then the
/// deepest device, then the lowest address.
fn topological(
    subjects: &[Subject],
    consumers: &[Vec<usize>],
    providers: &[Vec<usize>],
    depth: &[usize],
) -> Vec<usize> {
    let n = subjects.len();
    let mut waiting: Vec<usize> = consumers.iter().map(Vec::len).collect();
    let mut ready: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    let rank = |i: usize| {
        let participant = matches!(subjects[i], Subject::Participant(_));
        (
            !participant,
            std::cmp::Reverse(depth[i]),
            subjects[i].address(),
            i,
        )
    };
    while !ready.is_empty() {
        let (pos, _) = ready
            .iter()
            .enumerate()
            .min_by_key(|(_, &i)| rank(i))
            .unwrap_or((0, &0));
        let i = ready.swap_remove(pos);
        order.push(i);
        for &p in &providers[i] {
            waiting[p] -= 1;
            if waiting[p] == 0 {
                ready.push(p);
            }
        }
    }
    // Unreachable with acyclic constraints; never lose a subject anyway.
    for i in 0..n {
        if !order.contains(&i) {
            order.push(i);
        }
    }
    order
}

/// Finds every cycle of constraints (strongly connected components with
/// more than one member, or a member constrained by itself), drops the
/// constraints inside each, and returns one closed path per component,
/// starting from its lowest index.
fn break_cycles(providers: &mut [Vec<usize>]) -> Vec<Vec<usize>> {
    let components = strongly_connected(providers);
    let mut cycles = Vec::new();
    for comp in components {
        let cyclic = comp.len() > 1 || providers[comp[0]].contains(&comp[0]);
        if !cyclic {
            continue;
        }
        let start = *comp.iter().min().unwrap_or(&comp[0]);
        cycles.push(cycle_path(providers, &comp, start));
        for &i in &comp {
            providers[i].retain(|p| !comp.contains(p));
        }
    }
    cycles.sort();
    cycles
}

/// A closed path from `start` back to it within `comp` (depth-first).
fn cycle_path(providers: &[Vec<usize>], comp: &[usize], start: usize) -> Vec<usize> {
    if providers[start].contains(&start) {
        return vec![start];
    }
    let mut path = vec![start];
    let mut next: Vec<usize> = vec![0];
    let mut on_path = vec![false; providers.len()];
    on_path[start] = true;
    while let Some(&top) = path.last() {
        let k = next.last().copied().unwrap_or(0);
        let edges: Vec<usize> = providers[top]
            .iter()
            .copied()
            .filter(|p| comp.contains(p))
            .collect();
        if k >= edges.len() {
            on_path[top] = false;
            path.pop();
            next.pop();
            continue;
        }
        if let Some(n) = next.last_mut() {
            *n += 1;
        }
        let p = edges[k];
        if p == start {
            return path;
        }
        if !on_path[p] {
            on_path[p] = true;
            path.push(p);
            next.push(0);
        }
    }
    // A component always has a cycle through its lowest member.
    comp.to_vec()
}

/// Tarjan's strongly connected components, iteratively.
fn strongly_connected(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = edges.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next_index = 0;
    let mut out = Vec::new();
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        // (node, next edge to look at)
        let mut work: Vec<(usize, usize)> = vec![(root, 0)];
        index[root] = next_index;
        low[root] = next_index;
        next_index += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut e)) = work.last_mut() {
            if let Some(&w) = edges[v].get(*e) {
                *e += 1;
                if index[w] == usize::MAX {
                    index[w] = next_index;
                    low[w] = next_index;
                    next_index += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut comp = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                comp.sort_unstable();
                out.push(comp);
            }
        }
    }
    out
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

    pub(crate) fn part(id: u32, name: &str, providers: Vec<Provider>) -> ParticipantInfo {
        ParticipantInfo {
            id,
            name: name.into(),
            support: ShutdownSupport::TwoPhase,
            pid: 1,
            state: DriverState::Running,
            providers,
        }
    }

    fn a(s: &str) -> PciAddress {
        s.parse().unwrap()
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
        assert_eq!(plan.consumers(0), &[1]);
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
        assert_eq!(plan.cycles(), &[vec![0, 1], vec![3]]);
        assert_eq!(
            plan.cycle_labels(),
            vec![
                vec!["0000:01:00.0", "0000:02:00.0", "0000:01:00.0"],
                vec!["0000:04:00.0", "0000:04:00.0"]
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
        let err = Plan::with_participants(
            vec![],
            vec![part(1, "file", vec![]), part(2, "file", vec![])],
        );
        assert!(matches!(err, Err(PlanError::DuplicateParticipant(_))));
    }

    #[test]
    fn filesystem_before_disk_before_bridge() {
        let plan = Plan::with_participants(
            vec![
                dev("0000:00:1c.0", None),
                dev("0000:01:00.0", Some("0000:00:1c.0")),
                dev("0000:00:04.0", None),
            ],
            vec![part(7, "file", vec![Provider::Device(a("0000:01:00.0"))])],
        )
        .unwrap();
        // Subjects: 0 = file, 1 = bridge, 2 = disk behind it, 3 = other disk.
        assert_eq!(plan.subjects()[0].name(), "file");
        assert_eq!(plan.providers(0), &[2]);
        assert_eq!(plan.consumers(2), &[0]);
        assert_eq!(plan.consumers(1), &[2]);
        assert!(plan.consumers(3).is_empty(), "unrelated to the file system");
        let pos = |i| plan.order().iter().position(|&x| x == i).unwrap();
        assert!(pos(0) < pos(2) && pos(2) < pos(1));
    }

    #[test]
    fn participants_on_participants_and_on_every_device() {
        let plan = Plan::with_participants(
            vec![dev("0000:00:01.0", None), dev("0000:00:02.0", None)],
            vec![
                part(1, "file", vec![Provider::Participant("lvm".into())]),
                part(2, "lvm", vec![Provider::AllDevices]),
                part(3, "cache", vec![]),
            ],
        )
        .unwrap();
        assert_eq!(plan.providers(0), &[1]);
        assert_eq!(plan.providers(1), &[3, 4]);
        assert!(plan.providers(2).is_empty(), "no providers: independent");
        let pos = |i| plan.order().iter().position(|&x| x == i).unwrap();
        assert!(pos(0) < pos(1) && pos(1) < pos(3) && pos(1) < pos(4));
    }

    #[test]
    fn a_cycle_through_participants_is_named_and_broken() {
        let plan = Plan::with_participants(
            vec![dev("0000:00:01.0", None)],
            vec![
                part(1, "a", vec![Provider::Participant("b".into())]),
                part(2, "b", vec![Provider::Participant("c".into())]),
                part(
                    3,
                    "c",
                    vec![
                        Provider::Participant("a".into()),
                        Provider::Device(a("0000:00:01.0")),
                    ],
                ),
            ],
        )
        .unwrap();
        assert_eq!(
            plan.cycle_labels(),
            vec![vec![
                "participant a",
                "participant b",
                "participant c",
                "participant a"
            ]]
        );
        // Inside the cycle nothing waits; the edge out of it (c → disk) stays.
        assert!(plan.providers(0).is_empty() && plan.providers(1).is_empty());
        assert_eq!(plan.providers(2), &[3]);
    }

    #[test]
    fn unknown_providers_are_noted_and_ignored() {
        let plan = Plan::with_participants(
            vec![dev("0000:00:01.0", None)],
            vec![part(
                1,
                "file",
                vec![
                    Provider::Device(a("0000:00:09.0")),
                    Provider::Participant("nope".into()),
                ],
            )],
        )
        .unwrap();
        assert!(plan.providers(0).is_empty());
        assert_eq!(plan.unresolved().len(), 2);
        assert!(plan.unresolved()[0].contains("0000:00:09.0"));
    }

    #[test]
    fn cycle_detection_scales_and_finds_every_component() {
        // 300 two-member cycles chained by a long path: no recursion, and
        // every cycle reported once.
        let mut devices = Vec::new();
        for i in 0..300u16 {
            let (x, y) = (format!("{:04x}:01:00.0", i), format!("{:04x}:02:00.0", i));
            devices.push(dev(&x, Some(&y)));
            devices.push(dev(&y, Some(&x)));
        }
        for i in 0..2000u16 {
            let x = format!("{:04x}:03:00.0", i);
            let p = (i > 0).then(|| format!("{:04x}:03:00.0", i - 1));
            devices.push(dev(&x, p.as_deref()));
        }
        let plan = Plan::new(devices).unwrap();
        assert_eq!(plan.cycles().len(), 300);
        assert_eq!(plan.order().len(), 2600);
    }
}
