//! The fold: decoded events in log order to the rows of one flush. Pure: no I/O, no clock.
//!
//! Within a batch later events win, exactly as they would across batches, so folding a log in
//! batches of any size gives the same views. Events whose ids are already applied (or appear
//! twice in the batch) are skipped: a client retry that reached the log twice changes nothing.

use std::collections::{BTreeMap, HashSet};

use runstream_log::Position;
use runstream_schema::{Body, Event, EventId, RunState};
use runstream_views::*;

/// A log record, decoded.
pub struct DecodedRecord {
    pub position: Position,
    pub events: Vec<Event>,
}

#[derive(Default)]
struct SeriesAcc {
    steps: Vec<i64>,
    times: Vec<i64>,
    values: Vec<f64>,
    lines: Vec<String>,
}

impl SeriesAcc {
    /// Sorts the points and keeps the last write of each one: a float point is identified by its
    /// step and time (a step logged again at another time is a second point, as in MLflow's
    /// history), a line by its step.
    fn settle(&mut self, strings: bool) {
        let key = |i: usize| (self.steps[i], if strings { 0 } else { self.times[i] });
        let sorted = (1..self.steps.len()).all(|i| key(i - 1) < key(i));
        if sorted {
            return;
        }
        let mut idx: Vec<usize> = (0..self.steps.len()).collect();
        // Stable: equal keys keep log order, and the last one is kept below.
        idx.sort_by_key(|&i| key(i));
        let mut keep: Vec<usize> = Vec::with_capacity(idx.len());
        for i in idx {
            match keep.last_mut() {
                Some(last) if key(*last) == key(i) => *last = i,
                _ => keep.push(i),
            }
        }
        self.steps = keep.iter().map(|&i| self.steps[i]).collect();
        self.times = keep.iter().map(|&i| self.times[i]).collect();
        if strings {
            let mut lines = std::mem::take(&mut self.lines);
            self.lines = keep.iter().map(|&i| std::mem::take(&mut lines[i])).collect();
        } else {
            self.values = keep.iter().map(|&i| self.values[i]).collect();
        }
    }
}

/// Folds records into one [`RowBatch`], skipping events in `known`.
pub fn fold(records: &[DecodedRecord], known: &HashSet<EventId>) -> RowBatch {
    let mut seen: HashSet<EventId> = HashSet::new();
    let mut runs: BTreeMap<(String, String), RunPatch> = BTreeMap::new();
    let mut attrs: BTreeMap<(String, String, String), Option<runstream_schema::Value>> = BTreeMap::new();
    let mut tags: BTreeMap<(String, String, String), bool> = BTreeMap::new();
    let mut floats: BTreeMap<SeriesKey, SeriesAcc> = BTreeMap::new();
    let mut strings: BTreeMap<SeriesKey, SeriesAcc> = BTreeMap::new();
    let mut files: BTreeMap<(String, String, String, Option<i64>), FileRow> = BTreeMap::new();
    let mut lineage: BTreeMap<(String, String, &'static str, &'static str, String, String), LineageRow> =
        BTreeMap::new();
    let mut events = Vec::new();
    let mut checkpoint: BTreeMap<u32, u64> = BTreeMap::new();

    for rec in records {
        let next = checkpoint.entry(rec.position.partition).or_insert(0);
        *next = (*next).max(rec.position.offset + 1);
        for (seq, e) in rec.events.iter().enumerate() {
            if known.contains(&e.id) || !seen.insert(e.id) {
                continue;
            }
            let project = e.project_key();
            let run = e.run.to_string();
            let at = e.default_time_ms();
            events.push(StoredEvent {
                project: project.clone(),
                run: run.clone(),
                id: e.id,
                partition: rec.position.partition,
                offset: rec.position.offset,
                seq: seq as u32,
                kind: e.body.kind().to_string(),
            });
            let patch = runs.entry((project.clone(), run.clone())).or_insert_with(|| RunPatch {
                project: project.clone(),
                run: run.clone(),
                ..Default::default()
            });
            patch.updated_ms = patch.updated_ms.max(at);
            match &e.body {
                // The first creation of a run is the one that counts: a client resuming a run it
                // could not tell exists may create it again, which must not rename or re-date it.
                Body::RunCreated(c) if patch.created.is_none() => {
                    patch.created = Some(RunCreatedRow {
                        name: c.name.clone(),
                        experiment: c.experiment.clone(),
                        parent_run: c.parent_run.as_ref().map(|r| r.to_string()),
                        description: c.description.clone(),
                        owner: e.actor.clone(),
                        created_ms: at,
                    });
                }
                Body::RunCreated(_) => {}
                Body::RunState(s) => {
                    patch.heartbeat_ms = Some(patch.heartbeat_ms.unwrap_or(0).max(at));
                    if s.state != RunState::Heartbeat {
                        patch.state = Some((s.state, s.message.clone(), at));
                    }
                }
                Body::AttributesSet(list) => {
                    for a in list {
                        attrs.insert((project.clone(), run.clone(), a.path.clone()), Some(a.value.clone()));
                    }
                }
                Body::AttributesDeleted(paths) => {
                    for p in paths {
                        attrs.insert((project.clone(), run.clone(), p.clone()), None);
                    }
                }
                Body::TagsAdded(t) | Body::TagsRemoved(t) => {
                    let present = matches!(e.body, Body::TagsAdded(_));
                    for tag in t {
                        tags.insert((project.clone(), run.clone(), tag.clone()), present);
                    }
                }
                Body::FloatPoints(p) => {
                    let acc = floats
                        .entry(SeriesKey {
                            project: project.clone(),
                            run: run.clone(),
                            path: p.series.clone(),
                        })
                        .or_default();
                    acc.steps.extend_from_slice(&p.steps);
                    if p.times_ms.is_empty() {
                        acc.times.extend(std::iter::repeat_n(at, p.steps.len()));
                    } else {
                        acc.times.extend_from_slice(&p.times_ms);
                    }
                    acc.values.extend_from_slice(&p.values);
                }
                Body::StringLines(l) => {
                    let acc = strings
                        .entry(SeriesKey {
                            project: project.clone(),
                            run: run.clone(),
                            path: l.series.clone(),
                        })
                        .or_default();
                    acc.steps.extend_from_slice(&l.steps);
                    if l.times_ms.is_empty() {
                        acc.times.extend(std::iter::repeat_n(at, l.steps.len()));
                    } else {
                        acc.times.extend_from_slice(&l.times_ms);
                    }
                    acc.lines.extend(l.lines.iter().cloned());
                }
                Body::File(f) => {
                    files.insert(
                        (project.clone(), run.clone(), f.path.clone(), f.step),
                        FileRow {
                            project: project.clone(),
                            run: run.clone(),
                            path: f.path.clone(),
                            step: f.step,
                            blob_key: f.blob_key.clone(),
                            size: f.size,
                            sha256: f.sha256.clone(),
                            media_type: f.media_type.clone(),
                            time_ms: at,
                        },
                    );
                }
                Body::Lineage(l) => {
                    lineage.insert(
                        (
                            project.clone(),
                            run.clone(),
                            l.direction.as_str(),
                            l.kind.as_str(),
                            l.name.clone(),
                            l.version.clone(),
                        ),
                        LineageRow {
                            project: project.clone(),
                            run: run.clone(),
                            direction: l.direction,
                            kind: l.kind,
                            name: l.name.clone(),
                            version: l.version.clone(),
                            digest: l.digest.clone(),
                            uri: l.uri.clone(),
                            time_ms: at,
                        },
                    );
                }
                Body::RunDeleted => patch.deleted = Some(true),
                Body::RunRestored => patch.deleted = Some(false),
            }
        }
    }

    RowBatch {
        runs: runs.into_values().collect(),
        attributes: attrs
            .into_iter()
            .map(|((project, run, path), value)| AttrRow {
                project,
                run,
                path,
                value,
            })
            .collect(),
        tags: tags
            .into_iter()
            .map(|((project, run, tag), present)| TagRow {
                project,
                run,
                tag,
                present,
            })
            .collect(),
        float_series: floats
            .into_iter()
            .map(|(key, mut acc)| {
                acc.settle(false);
                FloatSeriesRows {
                    key,
                    steps: acc.steps,
                    times_ms: acc.times,
                    values: acc.values,
                }
            })
            .collect(),
        string_series: strings
            .into_iter()
            .map(|(key, mut acc)| {
                acc.settle(true);
                StringSeriesRows {
                    key,
                    steps: acc.steps,
                    times_ms: acc.times,
                    lines: acc.lines,
                }
            })
            .collect(),
        files: files.into_values().collect(),
        lineage: lineage.into_values().collect(),
        events,
        checkpoint: checkpoint.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runstream_schema::*;

    fn ev(n: u128, body: Body) -> Event {
        Event {
            id: EventId(n),
            workspace: WorkspaceId::new("w").unwrap(),
            project: ProjectId::new("p").unwrap(),
            run: RunId::new("r").unwrap(),
            client_time_ms: 1000 + n as i64,
            ingest_time_ms: 5000,
            actor: "alice".into(),
            schema_version: SCHEMA_VERSION,
            body,
        }
    }

    fn rec(offset: u64, events: Vec<Event>) -> DecodedRecord {
        DecodedRecord {
            position: Position { partition: 0, offset },
            events,
        }
    }

    fn points(n: u128, steps: Vec<i64>, values: Vec<f64>) -> Event {
        ev(
            n,
            Body::FloatPoints(FloatPoints {
                series: "loss".into(),
                steps,
                times_ms: vec![],
                values,
            }),
        )
    }

    #[test]
    fn points_come_out_sorted_by_step_and_time_and_the_last_write_of_one_wins() {
        let timed = |n: u128, steps: Vec<i64>, times_ms: Vec<i64>, values: Vec<f64>| {
            ev(
                n,
                Body::FloatPoints(FloatPoints {
                    series: "loss".into(),
                    steps,
                    times_ms,
                    values,
                }),
            )
        };
        let b = fold(
            &[
                rec(0, vec![points(1, vec![3, 1, 2], vec![30.0, 10.0, 20.0])]),
                // Step 1 again at another time: a second point of step 1.
                rec(1, vec![points(2, vec![1], vec![11.0])]),
                // Step 2 again at the same time: replaces the value.
                rec(2, vec![timed(3, vec![2, 0], vec![1001, 7], vec![21.0, 0.5])]),
            ],
            &HashSet::new(),
        );
        let s = &b.float_series[0];
        assert_eq!(s.steps, vec![0, 1, 1, 2, 3]);
        assert_eq!(s.times_ms, vec![7, 1001, 1002, 1001, 1001]);
        assert_eq!(s.values, vec![0.5, 10.0, 11.0, 21.0, 30.0]);
        assert_eq!(b.checkpoint, vec![(0, 3)]);
    }

    #[test]
    fn a_line_written_again_at_a_step_replaces_it_whatever_its_time() {
        let line = |n: u128, step: i64, text: &str| {
            ev(
                n,
                Body::StringLines(StringLines {
                    series: "log".into(),
                    steps: vec![step],
                    times_ms: vec![],
                    lines: vec![text.into()],
                }),
            )
        };
        let b = fold(
            &[rec(0, vec![line(1, 4, "a"), line(2, 2, "b"), line(3, 4, "c")])],
            &HashSet::new(),
        );
        let s = &b.string_series[0];
        assert_eq!(s.steps, vec![2, 4]);
        assert_eq!(s.lines, vec!["b".to_string(), "c".to_string()]);
    }

    #[test]
    fn a_run_created_again_keeps_its_first_creation() {
        let created = |n: u128, name: &str| {
            ev(
                n,
                Body::RunCreated(RunCreated {
                    name: name.into(),
                    ..Default::default()
                }),
            )
        };
        let b = fold(
            &[rec(0, vec![created(1, "first"), created(2, "again")])],
            &HashSet::new(),
        );
        let c = b.runs[0].created.as_ref().unwrap();
        assert_eq!((c.name.as_str(), c.created_ms), ("first", 1001));
    }

    #[test]
    fn known_and_repeated_events_are_skipped() {
        let e = points(7, vec![0], vec![1.0]);
        let b = fold(&[rec(0, vec![e.clone()]), rec(1, vec![e.clone()])], &HashSet::new());
        assert_eq!(b.events.len(), 1);
        let b = fold(&[rec(2, vec![e])], &HashSet::from([EventId(7)]));
        assert!(b.events.is_empty() && b.float_series.is_empty());
        assert_eq!(
            b.checkpoint,
            vec![(0, 3)],
            "the checkpoint still advances past skipped events"
        );
    }

    #[test]
    fn later_events_override_earlier_ones() {
        let evs = vec![
            ev(
                1,
                Body::RunCreated(RunCreated {
                    name: "n".into(),
                    ..Default::default()
                }),
            ),
            ev(
                2,
                Body::AttributesSet(vec![Attribute {
                    path: "a".into(),
                    value: Value::Int(1),
                }]),
            ),
            ev(3, Body::TagsAdded(vec!["x".into(), "y".into()])),
            points(4, vec![5, 6], vec![1.0, 2.0]),
            ev(5, Body::AttributesDeleted(vec!["a".into()])),
            ev(6, Body::TagsRemoved(vec!["x".into()])),
            ev(
                7,
                Body::RunState(RunStateChanged {
                    state: RunState::Finished,
                    message: String::new(),
                }),
            ),
            points(8, vec![6], vec![3.0]),
        ];
        let whole = fold(&[rec(0, evs.clone())], &HashSet::new());
        assert_eq!(
            whole.attributes,
            vec![AttrRow {
                project: "w/p".into(),
                run: "r".into(),
                path: "a".into(),
                value: None
            }]
        );
        assert_eq!(whole.tags.iter().filter(|t| t.present).count(), 1);
        // Step 6 again, at a later time: a second point of step 6.
        assert_eq!(whole.float_series[0].steps, vec![5, 6, 6]);
        assert_eq!(whole.float_series[0].values, vec![1.0, 2.0, 3.0]);
        let st = whole.runs[0].state.clone().unwrap();
        assert_eq!(st.0, RunState::Finished);
        assert_eq!(whole.runs[0].created.as_ref().unwrap().owner, "alice");
    }
}
