//! The conformance suite: the behaviour every [`ProfileStore`] must show, written once against a
//! [`Harness`] and run against each implementation (see `conformance_tests!` and its
//! invocations next to each implementation).

use bytes::Bytes;

use crate::{
    Change, ChangeBatch, ChangeKind, ConsumerOffsets, EventRef, IdentKey, NewJournalEntry,
    ProfileId, ProfileRecord, ProfileState, ProfileStore, TimelineEntry,
};

/// Opens a store; `open` called again opens the same data (a restart).
pub(crate) trait Harness {
    fn open(&self) -> Box<dyn ProfileStore>;
}

/// Generates one `#[test]` per case for a harness expression of type `Option<impl Harness>`
/// (`None` skips the case, e.g. when PostgreSQL is not configured).
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance::conformance_tests!(
            @cases $harness;
            upserted_profiles_are_read_back,
            unknown_ids_and_keys_are_absent,
            identifier_keys_point_moves_and_are_removed,
            merges_redirect_and_move_the_timeline,
            deletion_empties_the_timeline_and_upsert_revives,
            timelines_are_newest_first_and_paginate,
            timeline_summaries_count_and_span,
            change_feed_has_each_id_once_at_its_latest_change,
            change_feed_filters_by_time_and_pages_by_seq,
            journal_keeps_order_per_profile_and_by_kind,
            erasure_removes_journals_and_keeps_sequences_increasing,
            consumer_offsets_commit_with_the_batch,
            documents_are_opaque_bytes,
            committed_batches_survive_a_reopen,
            large_batches_apply,
            readers_run_beside_a_writer
        );
    };
    (@cases $harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                match $harness {
                    Some(harness) => $crate::conformance::$case(&harness),
                    None => eprintln!(concat!("skipped ", stringify!($case), ": store not configured")),
                }
            }
        )*
    };
}
pub(crate) use conformance_tests;

fn id(n: u8) -> ProfileId {
    let mut bytes = [0u8; 16];
    bytes[0] = n;
    bytes[15] = n.wrapping_mul(7);
    ProfileId::from_bytes(bytes)
}

fn key(text: &str) -> IdentKey {
    IdentKey(Bytes::copy_from_slice(text.as_bytes()))
}

fn record(n: u8, at_ms: i64, doc: &str) -> ProfileRecord {
    ProfileRecord {
        id: id(n),
        updated_at_ms: at_ms,
        doc: Bytes::copy_from_slice(doc.as_bytes()),
    }
}

fn entry(timestamp_ms: i64, partition: u32, offset: u64) -> TimelineEntry {
    TimelineEntry {
        timestamp_ms,
        event: EventRef { partition, offset },
    }
}

fn active_doc(store: &dyn ProfileStore, n: u8) -> Option<String> {
    match store.get(&id(n)).unwrap() {
        Some(ProfileState::Active(record)) => Some(String::from_utf8(record.doc.to_vec()).unwrap()),
        _ => None,
    }
}

fn upsert(store: &dyn ProfileStore, records: Vec<ProfileRecord>) {
    store
        .apply(&ChangeBatch {
            at_ms: 1,
            upserts: records,
            ..ChangeBatch::default()
        })
        .unwrap();
}

pub(crate) fn upserted_profiles_are_read_back(harness: &impl Harness) {
    let store = harness.open();
    upsert(&*store, vec![record(1, 10, "one"), record(2, 11, "two")]);
    assert_eq!(active_doc(&*store, 1).as_deref(), Some("one"));
    upsert(&*store, vec![record(1, 12, "one, again")]);
    let Some(ProfileState::Active(got)) = store.get(&id(1)).unwrap() else {
        panic!("profile 1 is not active");
    };
    assert_eq!(got, record(1, 12, "one, again"));
    let many = store.get_many(&[id(2), id(9), id(1)]).unwrap();
    assert_eq!(many.len(), 3);
    assert_eq!(many[0], Some(ProfileState::Active(record(2, 11, "two"))));
    assert_eq!(many[1], None);
    assert_eq!(
        many[2],
        Some(ProfileState::Active(record(1, 12, "one, again")))
    );
    assert_eq!(store.count_active().unwrap(), 2);
}

pub(crate) fn unknown_ids_and_keys_are_absent(harness: &impl Harness) {
    let store = harness.open();
    assert_eq!(store.get(&id(42)).unwrap(), None);
    assert_eq!(
        store.lookup(&key("email\0nobody@example.com")).unwrap(),
        None
    );
    assert!(store.timeline(&id(42), None, 10).unwrap().is_empty());
    assert!(store.journal(&id(42), 10).unwrap().is_empty());
    assert!(store.changes(None, 0, 10).unwrap().is_empty());
    assert!(store.consumer_offsets("identity").unwrap().is_empty());
    assert_eq!(store.count_active().unwrap(), 0);
}

pub(crate) fn identifier_keys_point_moves_and_are_removed(harness: &impl Harness) {
    let store = harness.open();
    store
        .apply(&ChangeBatch {
            identifiers: vec![
                (key("email\0a@example.com"), Some(id(1))),
                (key("user_id\0u-1"), Some(id(1))),
                (key("email\0b@example.com"), Some(id(2))),
            ],
            ..ChangeBatch::default()
        })
        .unwrap();
    assert_eq!(store.lookup(&key("user_id\0u-1")).unwrap(), Some(id(1)));
    // Keys are bytes: a key that differs only in case is another key.
    assert_eq!(store.lookup(&key("email\0A@example.com")).unwrap(), None);
    store
        .apply(&ChangeBatch {
            identifiers: vec![
                (key("email\0a@example.com"), Some(id(2))),
                (key("user_id\0u-1"), None),
            ],
            ..ChangeBatch::default()
        })
        .unwrap();
    let found = store
        .lookup_many(&[
            key("email\0a@example.com"),
            key("user_id\0u-1"),
            key("email\0b@example.com"),
        ])
        .unwrap();
    assert_eq!(found, vec![Some(id(2)), None, Some(id(2))]);
    // Removing a key that is not there is not an error.
    store
        .apply(&ChangeBatch {
            identifiers: vec![(key("phone\0+4930123"), None)],
            ..ChangeBatch::default()
        })
        .unwrap();
}

pub(crate) fn merges_redirect_and_move_the_timeline(harness: &impl Harness) {
    let store = harness.open();
    store
        .apply(&ChangeBatch {
            at_ms: 5,
            upserts: vec![record(1, 5, "winner"), record(2, 5, "loser")],
            timeline: vec![
                (id(1), entry(100, 0, 1)),
                (id(2), entry(200, 1, 7)),
                (id(2), entry(50, 0, 3)),
            ],
            ..ChangeBatch::default()
        })
        .unwrap();
    store
        .apply(&ChangeBatch {
            at_ms: 9,
            merged: vec![(id(2), id(1))],
            upserts: vec![record(1, 9, "winner with loser")],
            ..ChangeBatch::default()
        })
        .unwrap();
    assert_eq!(
        store.get(&id(2)).unwrap(),
        Some(ProfileState::Merged {
            into: id(1),
            at_ms: 9
        })
    );
    assert_eq!(active_doc(&*store, 1).as_deref(), Some("winner with loser"));
    assert!(store.timeline(&id(2), None, 10).unwrap().is_empty());
    assert_eq!(
        store.timeline(&id(1), None, 10).unwrap(),
        vec![entry(200, 1, 7), entry(100, 0, 1), entry(50, 0, 3)]
    );
    assert_eq!(store.count_active().unwrap(), 1);
    let changes = store.changes(None, 0, 10).unwrap();
    let kinds: Vec<(ProfileId, ChangeKind)> = changes.iter().map(|c| (c.id, c.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            (id(2), ChangeKind::MergedInto(id(1))),
            (id(1), ChangeKind::Upserted)
        ]
    );
}

pub(crate) fn deletion_empties_the_timeline_and_upsert_revives(harness: &impl Harness) {
    let store = harness.open();
    store
        .apply(&ChangeBatch {
            at_ms: 1,
            upserts: vec![record(3, 1, "three")],
            timeline: vec![(id(3), entry(10, 0, 0)), (id(3), entry(11, 0, 1))],
            ..ChangeBatch::default()
        })
        .unwrap();
    store
        .apply(&ChangeBatch {
            at_ms: 2,
            deleted: vec![id(3)],
            ..ChangeBatch::default()
        })
        .unwrap();
    assert_eq!(
        store.get(&id(3)).unwrap(),
        Some(ProfileState::Deleted { at_ms: 2 })
    );
    assert!(store.timeline(&id(3), None, 10).unwrap().is_empty());
    assert_eq!(store.count_active().unwrap(), 0);
    // A rebuild deletes and re-creates an id in one batch: the delete comes first.
    store
        .apply(&ChangeBatch {
            at_ms: 3,
            deleted: vec![id(3)],
            upserts: vec![record(3, 3, "three, rebuilt")],
            timeline: vec![(id(3), entry(11, 0, 1))],
            ..ChangeBatch::default()
        })
        .unwrap();
    assert_eq!(active_doc(&*store, 3).as_deref(), Some("three, rebuilt"));
    assert_eq!(
        store.timeline(&id(3), None, 10).unwrap(),
        vec![entry(11, 0, 1)]
    );
    // A merged id comes back as active when upserted (an unmerge).
    store
        .apply(&ChangeBatch {
            at_ms: 4,
            upserts: vec![record(4, 4, "four")],
            merged: vec![(id(3), id(4))],
            ..ChangeBatch::default()
        })
        .unwrap();
    assert_eq!(
        store.timeline(&id(4), None, 10).unwrap(),
        vec![entry(11, 0, 1)]
    );
    upsert(&*store, vec![record(3, 5, "three, unmerged")]);
    assert_eq!(active_doc(&*store, 3).as_deref(), Some("three, unmerged"));
}

pub(crate) fn timelines_are_newest_first_and_paginate(harness: &impl Harness) {
    let store = harness.open();
    let entries = [
        entry(300, 0, 5),
        entry(100, 2, 1),
        entry(300, 1, 2),
        entry(200, 0, 9),
        entry(300, 1, 1),
        entry(-5, 3, 0),
    ];
    store
        .apply(&ChangeBatch {
            timeline: entries.iter().map(|e| (id(1), *e)).collect(),
            ..ChangeBatch::default()
        })
        .unwrap();
    // Adding an entry again keeps one.
    store
        .apply(&ChangeBatch {
            timeline: vec![(id(1), entry(200, 0, 9)), (id(2), entry(1, 0, 0))],
            ..ChangeBatch::default()
        })
        .unwrap();
    let expected = vec![
        entry(300, 1, 2),
        entry(300, 1, 1),
        entry(300, 0, 5),
        entry(200, 0, 9),
        entry(100, 2, 1),
        entry(-5, 3, 0),
    ];
    assert_eq!(store.timeline(&id(1), None, 100).unwrap(), expected);
    let first = store.timeline(&id(1), None, 2).unwrap();
    assert_eq!(first, expected[..2]);
    let second = store.timeline(&id(1), first.last(), 3).unwrap();
    assert_eq!(second, expected[2..5]);
    let third = store.timeline(&id(1), second.last(), 3).unwrap();
    assert_eq!(third, expected[5..]);
    assert!(store.timeline(&id(1), third.last(), 3).unwrap().is_empty());
    assert_eq!(
        store.timeline(&id(2), None, 100).unwrap(),
        vec![entry(1, 0, 0)]
    );
}

pub(crate) fn timeline_summaries_count_and_span(harness: &impl Harness) {
    let store = harness.open();
    assert_eq!(
        store.timeline_summary(&id(1)).unwrap(),
        crate::TimelineSummary::default()
    );
    store
        .apply(&ChangeBatch {
            timeline: vec![
                (id(1), entry(300, 0, 5)),
                (id(1), entry(-20, 1, 1)),
                (id(1), entry(300, 0, 5)),
                (id(1), entry(40, 2, 9)),
                (id(2), entry(1_000, 0, 0)),
            ],
            ..ChangeBatch::default()
        })
        .unwrap();
    assert_eq!(
        store.timeline_summary(&id(1)).unwrap(),
        crate::TimelineSummary {
            events: 3,
            first_ms: Some(-20),
            last_ms: Some(300)
        }
    );
}

pub(crate) fn change_feed_has_each_id_once_at_its_latest_change(harness: &impl Harness) {
    let store = harness.open();
    upsert(&*store, vec![record(1, 10, "a"), record(2, 11, "b")]);
    upsert(&*store, vec![record(3, 12, "c")]);
    upsert(&*store, vec![record(1, 13, "a2")]);
    let changes = store.changes(None, 0, 100).unwrap();
    let ids: Vec<ProfileId> = changes.iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![id(2), id(3), id(1)]);
    assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(changes[2].updated_at_ms, 13);
    assert!(changes.iter().all(|c| c.kind == ChangeKind::Upserted));
    // Polling from the last seq sees only what changed after it.
    let last = changes[2].seq;
    assert!(store.changes(None, last, 100).unwrap().is_empty());
    upsert(&*store, vec![record(2, 14, "b2")]);
    let later = store.changes(None, last, 100).unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!((later[0].id, later[0].updated_at_ms), (id(2), 14));
    assert!(later[0].seq > last);
}

pub(crate) fn change_feed_filters_by_time_and_pages_by_seq(harness: &impl Harness) {
    let store = harness.open();
    for n in 1..=20u8 {
        upsert(&*store, vec![record(n, 1_000 + i64::from(n), "x")]);
    }
    let mut seen: Vec<Change> = Vec::new();
    let mut cursor = 0;
    loop {
        let page = store.changes(Some(1_011), cursor, 4).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        cursor = page.last().unwrap().seq;
        seen.extend(page);
    }
    let ids: Vec<ProfileId> = seen.iter().map(|c| c.id).collect();
    assert_eq!(ids, (11..=20u8).map(id).collect::<Vec<_>>());
    assert!(seen.iter().all(|c| c.updated_at_ms >= 1_011));
}

pub(crate) fn journal_keeps_order_per_profile_and_by_kind(harness: &impl Harness) {
    let store = harness.open();
    let note = |n: u8, kind: &str, at_ms: i64, doc: &str| NewJournalEntry {
        profile: id(n),
        kind: kind.to_owned(),
        at_ms,
        doc: Bytes::copy_from_slice(doc.as_bytes()),
    };
    store
        .apply(&ChangeBatch {
            journal: vec![
                note(1, "merge", 5, "m1"),
                note(2, "merge_refused", 6, "r1"),
                note(1, "merge_refused", 7, "r2"),
            ],
            ..ChangeBatch::default()
        })
        .unwrap();
    store
        .apply(&ChangeBatch {
            journal: vec![note(1, "unmerge", 8, "u1")],
            ..ChangeBatch::default()
        })
        .unwrap();
    let of_one = store.journal(&id(1), 10).unwrap();
    let docs: Vec<&[u8]> = of_one.iter().map(|e| e.doc.as_ref()).collect();
    assert_eq!(docs, vec![&b"m1"[..], b"r2", b"u1"]);
    assert_eq!(of_one[1].kind, "merge_refused");
    assert_eq!(of_one[1].at_ms, 7);
    assert!(of_one.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(store.journal(&id(1), 2).unwrap().len(), 2);
    let refused = store.journal_by_kind("merge_refused", 0, 10).unwrap();
    assert_eq!(
        refused.iter().map(|e| e.profile).collect::<Vec<_>>(),
        vec![id(2), id(1)]
    );
    let after_first = store
        .journal_by_kind("merge_refused", refused[0].seq, 10)
        .unwrap();
    assert_eq!(after_first.len(), 1);
    assert_eq!(after_first[0].doc.as_ref(), b"r2");
}

pub(crate) fn erasure_removes_journals_and_keeps_sequences_increasing(harness: &impl Harness) {
    let store = harness.open();
    let note = |n: u8, kind: &str, doc: &str| NewJournalEntry {
        profile: id(n),
        kind: kind.to_owned(),
        at_ms: 1,
        doc: Bytes::copy_from_slice(doc.as_bytes()),
    };
    let mut first = ChangeBatch {
        journal: vec![
            note(1, "merge", "a"),
            note(2, "merge", "b"),
            note(1, "merge", "c"),
        ],
        ..ChangeBatch::default()
    };
    first.timeline.push((id(1), entry(10, 0, 1)));
    store.apply(&first).unwrap();
    upsert(store.as_ref(), vec![record(1, 10, "doc one")]);
    let last_before = store.journal_by_kind("merge", 0, 10).unwrap()[2].seq;

    // The erasure batch: journals removed first, the profile deleted, the erasure itself
    // journaled under the erased id in the same batch.
    store
        .apply(&ChangeBatch {
            at_ms: 20,
            erased: vec![id(1)],
            deleted: vec![id(1)],
            journal: vec![note(1, "erasure", "tombstone")],
            ..ChangeBatch::default()
        })
        .unwrap();
    let of_one = store.journal(&id(1), 10).unwrap();
    assert_eq!(of_one.len(), 1, "only the erasure entry is left");
    assert_eq!(of_one[0].kind, "erasure");
    assert!(of_one[0].seq > last_before, "sequences never repeat");
    let merges = store.journal_by_kind("merge", 0, 10).unwrap();
    assert_eq!(merges.len(), 1, "other profiles keep their journal");
    assert_eq!(merges[0].profile, id(2));
    assert!(matches!(
        store.get(&id(1)).unwrap(),
        Some(ProfileState::Deleted { .. })
    ));
    assert!(store.timeline(&id(1), None, 10).unwrap().is_empty());
    drop(store);
    let reopened = harness.open();
    assert_eq!(reopened.journal(&id(1), 10).unwrap().len(), 1);
}

pub(crate) fn consumer_offsets_commit_with_the_batch(harness: &impl Harness) {
    let store = harness.open();
    let commit = |consumer: &str, offsets: Vec<(u32, u64)>| ChangeBatch {
        offsets: Some(ConsumerOffsets {
            consumer: consumer.to_owned(),
            offsets,
        }),
        ..ChangeBatch::default()
    };
    store
        .apply(&commit("identity", vec![(0, 10), (2, 4)]))
        .unwrap();
    store
        .apply(&commit("identity", vec![(2, 9), (1, 3)]))
        .unwrap();
    store.apply(&commit("other", vec![(0, 1)])).unwrap();
    assert_eq!(
        store.consumer_offsets("identity").unwrap(),
        vec![(0, 10), (1, 3), (2, 9)]
    );
    assert_eq!(store.consumer_offsets("other").unwrap(), vec![(0, 1)]);
    assert_eq!(store.consumer_offsets("nobody").unwrap(), vec![]);
}

pub(crate) fn documents_are_opaque_bytes(harness: &impl Harness) {
    let store = harness.open();
    let binary: Vec<u8> = (0..=255u8).chain([0, 0, 255]).collect();
    let binary_record = ProfileRecord {
        id: id(7),
        updated_at_ms: 1,
        doc: Bytes::from(binary.clone()),
    };
    let key = IdentKey(Bytes::from(vec![0u8, 159, 146, 150, 0, 255]));
    store
        .apply(&ChangeBatch {
            upserts: vec![binary_record.clone()],
            identifiers: vec![(key.clone(), Some(id(7)))],
            journal: vec![NewJournalEntry {
                profile: id(7),
                kind: "merge".to_owned(),
                at_ms: 1,
                doc: Bytes::from(binary.clone()),
            }],
            ..ChangeBatch::default()
        })
        .unwrap();
    assert_eq!(
        store.get(&id(7)).unwrap(),
        Some(ProfileState::Active(binary_record))
    );
    assert_eq!(store.lookup(&key).unwrap(), Some(id(7)));
    assert_eq!(store.journal(&id(7), 1).unwrap()[0].doc.as_ref(), &binary);
    // An empty document is a document.
    upsert(&*store, vec![record(8, 1, "")]);
    assert_eq!(active_doc(&*store, 8).as_deref(), Some(""));
}

pub(crate) fn committed_batches_survive_a_reopen(harness: &impl Harness) {
    {
        let store = harness.open();
        store
            .apply(&ChangeBatch {
                at_ms: 1,
                upserts: vec![record(1, 1, "kept")],
                identifiers: vec![(key("email\0k@example.com"), Some(id(1)))],
                timeline: vec![(id(1), entry(5, 0, 0))],
                journal: vec![NewJournalEntry {
                    profile: id(1),
                    kind: "merge".to_owned(),
                    at_ms: 1,
                    doc: Bytes::from_static(b"j"),
                }],
                offsets: Some(ConsumerOffsets {
                    consumer: "identity".to_owned(),
                    offsets: vec![(0, 1)],
                }),
                ..ChangeBatch::default()
            })
            .unwrap();
    }
    let store = harness.open();
    assert_eq!(active_doc(&*store, 1).as_deref(), Some("kept"));
    assert_eq!(
        store.lookup(&key("email\0k@example.com")).unwrap(),
        Some(id(1))
    );
    assert_eq!(
        store.timeline(&id(1), None, 10).unwrap(),
        vec![entry(5, 0, 0)]
    );
    assert_eq!(store.journal(&id(1), 10).unwrap().len(), 1);
    assert_eq!(store.consumer_offsets("identity").unwrap(), vec![(0, 1)]);
    // Sequences keep increasing after a reopen.
    let before = store.changes(None, 0, 10).unwrap();
    upsert(&*store, vec![record(2, 2, "new")]);
    let after = store.changes(None, 0, 10).unwrap();
    assert_eq!(after.len(), before.len() + 1);
    assert!(after.last().unwrap().seq > before.last().unwrap().seq);
}

pub(crate) fn large_batches_apply(harness: &impl Harness) {
    let store = harness.open();
    let mut batch = ChangeBatch {
        at_ms: 1,
        ..ChangeBatch::default()
    };
    for n in 0..5_000u32 {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        let pid = ProfileId::from_bytes(bytes);
        batch.upserts.push(ProfileRecord {
            id: pid,
            updated_at_ms: 1,
            doc: Bytes::from(vec![b'x'; 200]),
        });
        batch
            .identifiers
            .push((key(&format!("email\0user{n}@example.com")), Some(pid)));
        batch
            .timeline
            .push((pid, entry(i64::from(n), n % 4, u64::from(n))));
        batch
            .timeline
            .push((pid, entry(i64::from(n) + 1, n % 4, u64::from(n) + 10_000)));
    }
    store.apply(&batch).unwrap();
    assert_eq!(store.count_active().unwrap(), 5_000);
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&4_321u32.to_be_bytes());
    let pid = ProfileId::from_bytes(bytes);
    assert_eq!(
        store.lookup(&key("email\0user4321@example.com")).unwrap(),
        Some(pid)
    );
    assert_eq!(store.timeline(&pid, None, 10).unwrap().len(), 2);
    let mut cursor = 0;
    let mut total = 0;
    loop {
        let page = store.changes(None, cursor, 1_000).unwrap();
        let Some(last) = page.last() else { break };
        cursor = last.seq;
        total += page.len();
    }
    assert_eq!(total, 5_000);
}

pub(crate) fn readers_run_beside_a_writer(harness: &impl Harness) {
    let store: std::sync::Arc<dyn ProfileStore> = harness.open().into();
    upsert(&*store, vec![record(1, 1, "0")]);
    std::thread::scope(|scope| {
        let writer = {
            let store = store.clone();
            scope.spawn(move || {
                for round in 1..=50u32 {
                    store
                        .apply(&ChangeBatch {
                            at_ms: i64::from(round),
                            upserts: vec![record(1, i64::from(round), &round.to_string())],
                            timeline: vec![(id(1), entry(i64::from(round), 0, u64::from(round)))],
                            ..ChangeBatch::default()
                        })
                        .unwrap();
                }
            })
        };
        for _ in 0..2 {
            let store = store.clone();
            scope.spawn(move || {
                let mut last = 0u32;
                for _ in 0..200 {
                    let doc = active_doc(&*store, 1).unwrap();
                    let round: u32 = doc.parse().unwrap();
                    assert!(round >= last, "a reader saw the document go back in time");
                    last = round;
                }
            });
        }
        writer.join().unwrap();
    });
    assert_eq!(active_doc(&*store, 1).as_deref(), Some("50"));
    assert_eq!(store.timeline(&id(1), None, 100).unwrap().len(), 50);
}

/// The in-memory reference implementation passes its own suite.
mod memory {
    use super::Harness;
    use crate::{MemoryStore, ProfileStore};
    use std::sync::Arc;

    /// Reopening shares the same store, as a restart of a durable store would.
    struct MemoryHarness(Arc<MemoryStore>);

    impl Harness for MemoryHarness {
        fn open(&self) -> Box<dyn ProfileStore> {
            Box::new(self.0.clone())
        }
    }

    fn harness() -> Option<MemoryHarness> {
        Some(MemoryHarness(Arc::new(MemoryStore::new())))
    }

    crate::conformance::conformance_tests!(harness());
}
