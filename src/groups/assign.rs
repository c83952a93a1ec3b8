//! Who mirrors which destination partition: the assignment the group leader computes
//! from its members' claims (pure; property-tested below).
//!
//! Sticky: a member keeps every partition it claims (it owned it in the last
//! generation) unless balance needs it elsewhere, so a join or a leave moves few
//! partitions, and each move costs a fence and a resume. Balanced by bytes, not by
//! count: each partition costs its weight (backlog bytes plus a minute of recent
//! throughput, as its owner reported) plus [`BASE`], so idle partitions are spread by
//! count and a hot one counts for many.

use std::collections::{BTreeMap, BTreeSet};

/// What every partition costs besides its weight: a partition's fixed share of
/// connections, requests and memory, and what makes idle partitions spread by count.
pub const BASE: u64 = 1 << 20;

/// A destination partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Part {
    pub topic: String,
    pub partition: i32,
}

/// A member and the partitions it owned in the last generation, with their weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub member: String,
    pub owned: Vec<(Part, u64)>,
}

/// The partitions each member mirrors in the new generation; every member is a key,
/// every partition appears once.
pub type Assignment = BTreeMap<String, BTreeSet<Part>>;

/// Assigns `partitions` to the members of `claims`. Deterministic: the same input gives
/// the same output whatever its order.
pub fn assign(claims: &[Claim], partitions: &BTreeSet<Part>) -> Assignment {
    let mut claims: Vec<&Claim> = claims.iter().collect();
    claims.sort_by(|a, b| a.member.cmp(&b.member));
    claims.dedup_by(|a, b| a.member == b.member);
    let mut out: Assignment = claims
        .iter()
        .map(|c| (c.member.clone(), BTreeSet::new()))
        .collect();
    if out.is_empty() {
        return out;
    }
    // Weights as the owners reported them; a partition claimed twice (two members
    // that both believed they owned it across a split) goes to the first by id.
    let mut weight: BTreeMap<&Part, u64> = BTreeMap::new();
    let mut taken: BTreeSet<&Part> = BTreeSet::new();
    for c in &claims {
        for (p, w) in &c.owned {
            if !partitions.contains(p) {
                continue;
            }
            weight.entry(p).or_insert(*w);
            if taken.insert(p) {
                out.get_mut(&c.member).expect("a member").insert(p.clone());
            }
        }
    }
    // A partition nobody reports on (new, or its owner left) weighs what the known
    // ones weigh on average.
    let known: Vec<u64> = weight.values().copied().collect();
    let unknown = if known.is_empty() {
        0
    } else {
        known.iter().sum::<u64>() / known.len() as u64
    };
    let cost = |p: &Part| {
        weight
            .get(p)
            .copied()
            .unwrap_or(unknown)
            .saturating_add(BASE)
    };
    let mut load: BTreeMap<String, u64> = out
        .iter()
        .map(|(m, s)| (m.clone(), s.iter().map(&cost).sum()))
        .collect();

    // The unowned, heaviest first, each to the least loaded member.
    let mut free: Vec<&Part> = partitions.iter().filter(|p| !taken.contains(p)).collect();
    free.sort_by(|a, b| cost(b).cmp(&cost(a)).then_with(|| a.cmp(b)));
    for p in free {
        let m = least(&load, &out);
        *load.get_mut(&m).expect("a member") += cost(p);
        out.get_mut(&m).expect("a member").insert(p.clone());
    }

    // Then moves from the most to the least loaded member while one narrows their gap
    // by at least BASE (which also bounds the moves: each lowers the sum of the
    // squared loads). Less than two BASE, so that partitions of near-equal weight
    // end within one of each other in count.
    for _ in 0..partitions.len().saturating_mul(out.len()) {
        let hi = most(&load);
        let lo = least(&load, &out);
        let gap = load[&hi] - load[&lo];
        let best = out[&hi]
            .iter()
            .map(|p| (gain(gap, cost(p)), p))
            .filter(|(g, _)| *g >= BASE)
            .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)));
        let Some((_, p)) = best else {
            break;
        };
        let p = p.clone();
        let c = cost(&p);
        out.get_mut(&hi).expect("a member").remove(&p);
        out.get_mut(&lo).expect("a member").insert(p);
        *load.get_mut(&hi).expect("a member") -= c;
        *load.get_mut(&lo).expect("a member") += c;
    }
    out
}

/// How much moving a partition of cost `c` narrows a gap of `gap` between two members.
fn gain(gap: u64, c: u64) -> u64 {
    if c >= gap {
        return 0;
    }
    gap - gap.abs_diff(2 * c)
}

/// The member with the least load (then the fewest partitions, then the first id).
fn least(load: &BTreeMap<String, u64>, out: &Assignment) -> String {
    load.iter()
        .min_by(|a, b| {
            a.1.cmp(b.1)
                .then_with(|| out[a.0].len().cmp(&out[b.0].len()))
                .then_with(|| a.0.cmp(b.0))
        })
        .map(|(m, _)| m.clone())
        .expect("at least one member")
}

/// The member with the most load (the first id among equals).
fn most(load: &BTreeMap<String, u64>) -> String {
    load.iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(m, _)| m.clone())
        .expect("at least one member")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn part(t: usize, p: i32) -> Part {
        Part {
            topic: format!("t{t}"),
            partition: p,
        }
    }

    fn parts(topics: usize, each: i32) -> BTreeSet<Part> {
        (0..topics)
            .flat_map(|t| (0..each).map(move |p| part(t, p)))
            .collect()
    }

    fn claims(a: &Assignment, w: u64) -> Vec<Claim> {
        a.iter()
            .map(|(m, s)| Claim {
                member: m.clone(),
                owned: s.iter().map(|p| (p.clone(), w)).collect(),
            })
            .collect()
    }

    fn joiner(m: &str) -> Claim {
        Claim {
            member: m.into(),
            owned: vec![],
        }
    }

    fn moved(before: &Assignment, after: &Assignment) -> usize {
        before
            .iter()
            .map(|(m, s)| after.get(m).map_or(s.len(), |a| s.difference(a).count()))
            .sum()
    }

    #[test]
    fn three_members_share_twelve_partitions_four_each() {
        let all = parts(3, 4);
        let a = assign(&[joiner("a"), joiner("b"), joiner("c")], &all);
        assert!(a.values().all(|s| s.len() == 4), "{a:?}");
    }

    #[test]
    fn a_join_moves_only_what_the_joiner_takes_and_a_leave_only_what_left() {
        let all = parts(3, 4);
        let two = assign(&[joiner("a"), joiner("b")], &all);
        assert_eq!(two.values().map(BTreeSet::len).collect::<Vec<_>>(), [6, 6]);
        let mut c = claims(&two, 0);
        c.push(joiner("c"));
        let three = assign(&c, &all);
        assert_eq!(three["c"].len(), 4);
        assert_eq!(moved(&two, &three), 4);
        // b leaves: only its 4 move, 2 to each.
        let c: Vec<Claim> = claims(&three, 0)
            .into_iter()
            .filter(|c| c.member != "b")
            .collect();
        let after = assign(&c, &all);
        assert_eq!(moved(&three, &after), 4);
        assert!(after.values().all(|s| s.len() == 6));
    }

    #[test]
    fn bytes_not_counts_decide_the_balance() {
        // One partition with a large backlog weighs as much as the other seven.
        let all = parts(1, 8);
        let heavy = 70 * BASE;
        let c = vec![
            Claim {
                member: "a".into(),
                owned: all
                    .iter()
                    .map(|p| (p.clone(), if p.partition == 0 { heavy } else { 9 * BASE }))
                    .collect(),
            },
            joiner("b"),
        ];
        let out = assign(&c, &all);
        let with_heavy = if out["a"].contains(&part(0, 0)) {
            "a"
        } else {
            "b"
        };
        assert_eq!(out[with_heavy].len(), 1, "{out:?}");
    }

    #[test]
    fn a_twice_claimed_partition_goes_to_one_member() {
        let all = parts(1, 3);
        let c = vec![
            Claim {
                member: "b".into(),
                owned: vec![(part(0, 0), 0), (part(0, 2), 0)],
            },
            Claim {
                member: "a".into(),
                owned: vec![(part(0, 0), 0), (part(0, 1), 0)],
            },
        ];
        let out = assign(&c, &all);
        assert_eq!(out["a"], [part(0, 0), part(0, 1)].into_iter().collect());
        assert_eq!(out["b"], [part(0, 2)].into_iter().collect());
    }

    fn arb_case() -> impl Strategy<Value = (Vec<Claim>, BTreeSet<Part>)> {
        (1usize..6, 1usize..4, 1i32..12).prop_flat_map(|(members, topics, each)| {
            let all = parts(topics, each);
            let n = all.len();
            (
                Just(all),
                proptest::collection::vec((0..members + 2, 0u64..50 * BASE), n),
                Just(members),
            )
                .prop_map(|(all, owners, members)| {
                    let mut c: Vec<Claim> =
                        (0..members).map(|m| joiner(&format!("m{m}"))).collect();
                    for (p, (owner, w)) in all.iter().zip(owners) {
                        // Owners beyond the members left the group.
                        if let Some(cl) = c.get_mut(owner) {
                            cl.owned.push((p.clone(), w));
                        }
                    }
                    (c, all)
                })
        })
    }

    proptest! {
        /// Every partition to exactly one present member; partitions claimed by a
        /// member stay with it unless balance moved them; loads end within one
        /// partition's cost (plus half a BASE) of each other.
        #[test]
        fn complete_sticky_and_balanced((c, all) in arb_case()) {
            let out = assign(&c, &all);
            prop_assert_eq!(out.len(), c.len());
            let mut seen = BTreeSet::new();
            for s in out.values() {
                for p in s {
                    prop_assert!(seen.insert(p.clone()), "twice: {:?}", p);
                }
            }
            prop_assert_eq!(&seen, &all);
            let w: BTreeMap<&Part, u64> = c.iter().flat_map(|c| c.owned.iter().map(|(p, w)| (p, *w))).collect();
            let mean = if w.is_empty() { 0 } else { w.values().sum::<u64>() / w.len() as u64 };
            let cost = |p: &Part| w.get(p).copied().unwrap_or(mean) + BASE;
            let loads: Vec<u64> = out.values().map(|s| s.iter().map(&cost).sum()).collect();
            let max_cost = all.iter().map(&cost).max().unwrap_or(0);
            let gap = loads.iter().max().unwrap() - loads.iter().min().unwrap();
            prop_assert!(gap <= max_cost + BASE / 2, "gap {} max cost {}", gap, max_cost);
            // Determinism whatever the order of the claims.
            let mut rev = c.clone();
            rev.reverse();
            prop_assert_eq!(assign(&rev, &all), out);
        }

        /// With equal weights, a rebalance moves no partition from a member that
        /// holds no more than its share, so at most the surplus moves.
        #[test]
        fn equal_weights_move_at_most_the_surplus((c, all) in arb_case()) {
            let c: Vec<Claim> = c.into_iter().map(|mut c| { for o in &mut c.owned { o.1 = 0; } c }).collect();
            let before: Assignment = c.iter().map(|c| (c.member.clone(), c.owned.iter().map(|o| o.0.clone()).collect())).collect();
            let out = assign(&c, &all);
            let share = all.len() / c.len();
            let surplus: usize = before.values().map(|s| s.len().saturating_sub(share)).sum();
            prop_assert!(moved(&before, &out) <= surplus, "moved {} surplus {}", moved(&before, &out), surplus);
            let counts: Vec<usize> = out.values().map(BTreeSet::len).collect();
            prop_assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1);
        }
    }
}
