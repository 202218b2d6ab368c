//! The coordinator's durable state: one redb database (`coordinator.redb`) in the data
//! directory. Every change that matters is one write transaction, and the serialized state
//! machine is written in the same transaction as the payloads its decisions refer to, so a
//! coordinator killed at any instant restarts from a consistent state.

// redb's own error type is large; it only travels on the (rare) failure path.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{Coordinator, LiveState, PublishedRound, SkippedRound};
use tributary_gauntlet::judge::GauntletState;

/// Keys: "machine" (the state machine without its logs, JSON: [`LiveState`]), "run"
/// ([`RunRecord`], JSON), "gauntlet" (ratings, standings, replay sketches: [`GauntletState`],
/// JSON, written with each published round).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The machine's logs, appended: position in the log → [`PublishedRound`] / [`SkippedRound`] JSON.
const PUBLISHED_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("published_log");
const SKIPPED_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("skipped_log");
/// Peer id → ed25519 public key.
const PEERS: TableDefinition<&str, &[u8]> = TableDefinition::new("peers");
/// (round, peer) → accepted payload of a round not yet published.
const UPDATES: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("updates");
/// (round, peer) → [`UpdateMeta`] JSON.
const UPDATE_META: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("update_meta");
/// Round → published aggregate bytes.
const AGGREGATES: TableDefinition<u64, &[u8]> = TableDefinition::new("aggregates");
/// Round → [`RoundRecord`] JSON, for every ended round.
const ROUNDS: TableDefinition<u64, &[u8]> = TableDefinition::new("rounds");
/// Round → checkpoint bytes, and → [`CheckpointRecord`] JSON.
const CHECKPOINTS: TableDefinition<u64, &[u8]> = TableDefinition::new("checkpoints");
const CHECKPOINT_META: TableDefinition<u64, &[u8]> = TableDefinition::new("checkpoint_meta");
/// (round, validator peer id) → that validator's scores of the round (JSON), until it ends.
const SCORES: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("scores");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {message}")]
    Db { path: String, message: String },
    #[error("store {path}: record {what} is corrupt: {message}")]
    Corrupt {
        path: String,
        what: String,
        message: String,
    },
}

/// Which run a data directory belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    /// The TrainingRunSpec as JSON, exactly as the run started.
    pub spec_json: String,
}

/// What a peer reported with an accepted update.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UpdateMeta {
    pub inner_loss: f64,
    pub tokens: u64,
    pub bytes: u64,
    /// When the coordinator accepted it: of two near-identical updates the later is the copy.
    #[serde(default)]
    pub accepted_unix_millis: u64,
}

/// One accepted update of a round and what the Gauntlet made of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectionRecord {
    pub peer: String,
    /// Its share of the aggregate; 0 when left out.
    pub weight: f32,
    /// Why it was left out (a check's or standing's label); empty when aggregated.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub excluded: String,
    /// The validators' combined score of it, when any arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

/// A validator's score of one candidate, as stored until the round ends.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoreRecord {
    pub score: f64,
    pub improvement_own: f64,
    pub improvement_random: f64,
}

/// One ended round, published or skipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    pub round: u64,
    pub published: bool,
    pub skip_reason: String,
    pub peers: Vec<String>,
    pub mean_loss: f64,
    pub tokens: u64,
    pub aggregate_bytes: u64,
    pub aggregate_sha256: Vec<u8>,
    pub update_bytes: u64,
    /// Aggregates published up to and including this round.
    pub model_version: u64,
    pub ended_unix_millis: u64,
    /// Every accepted update's fate (empty for skipped rounds and stores from before scoring).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selection: Vec<SelectionRecord>,
    /// Why the round ran without (all) validator scores; empty when it did not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub degraded: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    pub round: u64,
    pub bytes: u64,
    pub sha256: Vec<u8>,
    pub writer: String,
}

pub struct Store {
    db: Database,
    path: PathBuf,
    /// Log entries stored so far; held for the whole of each machine write.
    logged: Mutex<LogLen>,
}

/// Lengths of the machine's logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct LogLen {
    published: u64,
    skipped: u64,
}

/// One write of the machine: its live state and the log entries the store does not hold yet.
struct MachineRecord {
    live: Vec<u8>,
    published: Vec<(u64, Vec<u8>)>,
    skipped: Vec<(u64, Vec<u8>)>,
    len: LogLen,
}

impl MachineRecord {
    fn put(&self, tx: &redb::WriteTransaction) -> std::result::Result<(), redb::Error> {
        tx.open_table(META)?
            .insert("machine", self.live.as_slice())?;
        let mut published = tx.open_table(PUBLISHED_LOG)?;
        for (i, p) in &self.published {
            published.insert(*i, p.as_slice())?;
        }
        let mut skipped = tx.open_table(SKIPPED_LOG)?;
        for (i, s) in &self.skipped {
            skipped.insert(*i, s.as_slice())?;
        }
        Ok(())
    }
}

/// A store from before the log tables holds its logs in the machine record; its next write
/// appends them to the tables.
fn table_or_embedded<T>(table: Vec<T>, embedded: Vec<T>) -> Vec<T> {
    if table.is_empty() { embedded } else { table }
}

/// Logs inside the machine record, as stores written before the logs had tables hold them.
#[derive(Deserialize)]
struct EmbeddedLogs {
    #[serde(default)]
    published: Vec<PublishedRound>,
    #[serde(default)]
    skipped: Vec<SkippedRound>,
}

type Result<T> = std::result::Result<T, StoreError>;

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("coordinator.redb");
        let shown = path.display().to_string();
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Db {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let db = Database::create(&path).map_err(|e| StoreError::Db {
            path: shown,
            message: e.to_string(),
        })?;
        let mut store = Self {
            db,
            path,
            logged: Mutex::new(LogLen::default()),
        };
        store.write(|tx| {
            tx.open_table(META)?;
            tx.open_table(PUBLISHED_LOG)?;
            tx.open_table(SKIPPED_LOG)?;
            tx.open_table(PEERS)?;
            tx.open_table(UPDATES)?;
            tx.open_table(UPDATE_META)?;
            tx.open_table(AGGREGATES)?;
            tx.open_table(ROUNDS)?;
            tx.open_table(CHECKPOINTS)?;
            tx.open_table(CHECKPOINT_META)?;
            tx.open_table(SCORES)?;
            Ok(())
        })?;
        let len = {
            let tx = store.db.begin_read().map_err(|e| store.err(e))?;
            let published = tx.open_table(PUBLISHED_LOG).map_err(|e| store.err(e))?;
            let skipped = tx.open_table(SKIPPED_LOG).map_err(|e| store.err(e))?;
            LogLen {
                published: published.len().map_err(|e| store.err(e))?,
                skipped: skipped.len().map_err(|e| store.err(e))?,
            }
        };
        *store.logged.get_mut().unwrap_or_else(|p| p.into_inner()) = len;
        Ok(store)
    }

    fn logged(&self) -> MutexGuard<'_, LogLen> {
        // Only ever a pair of counters, consistent at every instant.
        self.logged.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What writing `machine` takes, given the log entries already stored.
    fn machine_record(&self, machine: &Coordinator, stored: LogLen) -> Result<MachineRecord> {
        let published = machine.published();
        let skipped = machine.skipped();
        Ok(MachineRecord {
            live: self.json("machine", &machine.live())?,
            published: self.log_tail("published round", published, stored.published)?,
            skipped: self.log_tail("skipped round", skipped, stored.skipped)?,
            len: LogLen {
                published: published.len() as u64,
                skipped: skipped.len() as u64,
            },
        })
    }

    /// The entries of `log` from position `stored` on, keyed by position.
    fn log_tail<T: Serialize>(
        &self,
        what: &str,
        log: &[T],
        stored: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        log.iter()
            .enumerate()
            .skip(stored as usize)
            .map(|(i, entry)| Ok((i as u64, self.json(what, entry)?)))
            .collect()
    }

    /// Runs `f` and writes `machine` in one write transaction.
    fn write_with_machine(
        &self,
        machine: &Coordinator,
        f: impl FnOnce(&redb::WriteTransaction) -> std::result::Result<(), redb::Error>,
    ) -> Result<()> {
        let mut logged = self.logged();
        let record = self.machine_record(machine, *logged)?;
        self.write(|tx| {
            f(tx)?;
            record.put(tx)
        })?;
        *logged = record.len;
        Ok(())
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Db {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    fn corrupt(&self, what: impl Into<String>, e: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            path: self.path.display().to_string(),
            what: what.into(),
            message: e.to_string(),
        }
    }

    /// Runs `f` in one write transaction and commits it.
    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> std::result::Result<(), redb::Error>,
    ) -> Result<()> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        f(&tx).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    fn json<T: Serialize>(&self, what: &str, value: &T) -> Result<Vec<u8>> {
        serde_json::to_vec(value).map_err(|e| self.corrupt(what, e))
    }

    fn parse<T: for<'de> Deserialize<'de>>(&self, what: &str, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| self.corrupt(what, e))
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(META).map_err(|e| self.err(e))?;
        let v = t.get(key).map_err(|e| self.err(e))?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    pub fn run(&self) -> Result<Option<RunRecord>> {
        self.get_meta("run")?
            .map(|b| self.parse("run", &b))
            .transpose()
    }

    /// The stored machine: its live state and its logs.
    pub fn machine(&self) -> Result<Option<Coordinator>> {
        let Some(bytes) = self.get_meta("machine")? else {
            return Ok(None);
        };
        let live: LiveState<'static> = self.parse("machine", &bytes)?;
        let embedded: EmbeddedLogs = self.parse("machine", &bytes)?;
        let published = self.log(PUBLISHED_LOG, "published round")?;
        let skipped = self.log(SKIPPED_LOG, "skipped round")?;
        Ok(Some(Coordinator::restore(
            live,
            table_or_embedded(published, embedded.published),
            table_or_embedded(skipped, embedded.skipped),
        )))
    }

    /// A whole log, in order; a gap in its positions is corruption.
    fn log<T: for<'de> Deserialize<'de>>(
        &self,
        table: TableDefinition<u64, &[u8]>,
        what: &str,
    ) -> Result<Vec<T>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(table).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            if k.value() != out.len() as u64 {
                return Err(self.corrupt(what, format!("entry {} is missing", out.len())));
            }
            out.push(self.parse(what, v.value())?);
        }
        Ok(out)
    }

    /// Records the run the store belongs to (at the start, or after an allowed spec change),
    /// with the machine.
    pub fn init(&self, run: &RunRecord, machine: &Coordinator) -> Result<()> {
        let run = self.json("run", run)?;
        self.write_with_machine(machine, |tx| {
            tx.open_table(META)?.insert("run", run.as_slice())?;
            Ok(())
        })
    }

    pub fn save_machine(&self, machine: &Coordinator) -> Result<()> {
        self.write_with_machine(machine, |_| Ok(()))
    }

    /// A joining peer's key, with the machine that admitted it.
    pub fn register_peer(&self, machine: &Coordinator, peer: &str, key: &[u8]) -> Result<()> {
        self.write_with_machine(machine, |tx| {
            tx.open_table(PEERS)?.insert(peer, key)?;
            Ok(())
        })
    }

    pub fn peer_key(&self, peer: &str) -> Result<Option<Vec<u8>>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(PEERS).map_err(|e| self.err(e))?;
        let v = t.get(peer).map_err(|e| self.err(e))?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    /// An accepted update and the machine that accepted it, atomically.
    pub fn accept_update(
        &self,
        machine: &Coordinator,
        round: u64,
        peer: &str,
        payload: &[u8],
        meta: &UpdateMeta,
    ) -> Result<()> {
        let meta = self.json("update meta", meta)?;
        self.write_with_machine(machine, |tx| {
            tx.open_table(UPDATES)?.insert((round, peer), payload)?;
            tx.open_table(UPDATE_META)?
                .insert((round, peer), meta.as_slice())?;
            Ok(())
        })
    }

    /// The accepted updates of `round`, sorted by peer.
    pub fn updates(&self, round: u64) -> Result<Vec<(String, Vec<u8>, UpdateMeta)>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let payloads = tx.open_table(UPDATES).map_err(|e| self.err(e))?;
        let metas = tx.open_table(UPDATE_META).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in payloads
            .range((round, "")..(round + 1, ""))
            .map_err(|e| self.err(e))?
        {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let (_, peer) = k.value();
            let meta = metas
                .get((round, peer))
                .map_err(|e| self.err(e))?
                .ok_or_else(|| self.corrupt(format!("update {round}/{peer}"), "no metadata"))?;
            let meta: UpdateMeta = self.parse("update meta", meta.value())?;
            out.push((peer.to_owned(), v.value().to_vec(), meta));
        }
        Ok(out)
    }

    /// Ends a round: its record, its aggregate (when published), the Gauntlet's state after it
    /// and the machine, atomically; the round's updates and scores are dropped (the aggregate
    /// supersedes them).
    pub fn end_round(
        &self,
        machine: &Coordinator,
        record: &RoundRecord,
        aggregate: Option<&[u8]>,
        gauntlet: Option<&GauntletState>,
    ) -> Result<()> {
        let r = self.json("round", record)?;
        let g = gauntlet.map(|g| self.json("gauntlet", g)).transpose()?;
        let round = record.round;
        let peers: Vec<String> = self.updates(round)?.into_iter().map(|u| u.0).collect();
        let validators: Vec<String> = self.scores(round)?.into_iter().map(|s| s.0).collect();
        self.write_with_machine(machine, |tx| {
            if let Some(a) = aggregate {
                tx.open_table(AGGREGATES)?.insert(round, a)?;
            }
            if let Some(g) = &g {
                tx.open_table(META)?.insert("gauntlet", g.as_slice())?;
            }
            let mut scores = tx.open_table(SCORES)?;
            for v in &validators {
                scores.remove((round, v.as_str()))?;
            }
            tx.open_table(ROUNDS)?.insert(round, r.as_slice())?;
            let mut updates = tx.open_table(UPDATES)?;
            let mut metas = tx.open_table(UPDATE_META)?;
            for p in &peers {
                updates.remove((round, p.as_str()))?;
                metas.remove((round, p.as_str()))?;
            }
            Ok(())
        })
    }

    /// The Gauntlet's state after the last published round (none before the first).
    pub fn gauntlet(&self) -> Result<Option<GauntletState>> {
        self.get_meta("gauntlet")?
            .map(|b| self.parse("gauntlet", &b))
            .transpose()
    }

    /// The peers with an accepted update of `round` and its metadata, sorted by peer (without
    /// reading the payloads).
    pub fn candidates(&self, round: u64) -> Result<Vec<(String, UpdateMeta)>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let metas = tx.open_table(UPDATE_META).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in metas
            .range((round, "")..(round + 1, ""))
            .map_err(|e| self.err(e))?
        {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let (_, peer) = k.value();
            out.push((peer.to_owned(), self.parse("update meta", v.value())?));
        }
        Ok(out)
    }

    /// One accepted update of `round`, while the round has not ended.
    pub fn update(&self, round: u64, peer: &str) -> Result<Option<Vec<u8>>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(UPDATES).map_err(|e| self.err(e))?;
        let v = t.get((round, peer)).map_err(|e| self.err(e))?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    /// A validator's scores of `round`.
    pub fn put_scores(
        &self,
        round: u64,
        validator: &str,
        scores: &BTreeMap<String, ScoreRecord>,
    ) -> Result<()> {
        let s = self.json("scores", scores)?;
        self.write(|tx| {
            tx.open_table(SCORES)?
                .insert((round, validator), s.as_slice())?;
            Ok(())
        })
    }

    /// Every validator's scores of `round`: (validator, peer → score), sorted by validator.
    pub fn scores(&self, round: u64) -> Result<Vec<(String, BTreeMap<String, ScoreRecord>)>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(SCORES).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in t
            .range((round, "")..(round + 1, ""))
            .map_err(|e| self.err(e))?
        {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let (_, validator) = k.value();
            out.push((validator.to_owned(), self.parse("scores", v.value())?));
        }
        Ok(out)
    }

    pub fn aggregate(&self, round: u64) -> Result<Option<Vec<u8>>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(AGGREGATES).map_err(|e| self.err(e))?;
        let v = t.get(round).map_err(|e| self.err(e))?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    /// Ended rounds from `from` on, oldest first.
    pub fn rounds(&self, from: u64) -> Result<Vec<RoundRecord>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(ROUNDS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in t.range(from..).map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            out.push(self.parse(&format!("round {}", k.value()), v.value())?);
        }
        Ok(out)
    }

    /// Stores a checkpoint and keeps only the newest `keep` (at least one).
    pub fn put_checkpoint(&self, record: &CheckpointRecord, bytes: &[u8], keep: u32) -> Result<()> {
        let r = self.json("checkpoint", record)?;
        let mut rounds: Vec<u64> = self.checkpoints()?.iter().map(|c| c.round).collect();
        rounds.push(record.round);
        rounds.sort_unstable();
        rounds.dedup();
        let drop = rounds.len().saturating_sub(keep.max(1) as usize);
        self.write(|tx| {
            tx.open_table(CHECKPOINTS)?.insert(record.round, bytes)?;
            tx.open_table(CHECKPOINT_META)?
                .insert(record.round, r.as_slice())?;
            for old in rounds.iter().take(drop) {
                tx.open_table(CHECKPOINTS)?.remove(*old)?;
                tx.open_table(CHECKPOINT_META)?.remove(*old)?;
            }
            Ok(())
        })
    }

    /// Stored checkpoints, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<CheckpointRecord>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(CHECKPOINT_META).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            out.push(self.parse(&format!("checkpoint {}", k.value()), v.value())?);
        }
        Ok(out)
    }

    pub fn checkpoint(&self, round: u64) -> Result<Option<Vec<u8>>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(CHECKPOINTS).map_err(|e| self.err(e))?;
        let v = t.get(round).map_err(|e| self.err(e))?;
        Ok(v.map(|v| v.value().to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::{Event, PeerId, RoundPolicy};
    use tributary_crds::ParticipationSpec;

    fn machine() -> Coordinator {
        let spec = ParticipationSpec {
            min_peers: 1,
            max_peers: 2,
            ..ParticipationSpec::default()
        };
        Coordinator::new(RoundPolicy::try_from(&spec).unwrap())
    }

    #[test]
    fn state_updates_and_rounds_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = machine();
        {
            let s = Store::open(dir.path()).unwrap();
            let run = RunRecord {
                run_id: "r".into(),
                spec_json: "{}".into(),
            };
            s.init(&run, &m).unwrap();
            m.apply(Event::Join {
                peer: PeerId::from("a"),
                now_ms: 5,
            });
            s.register_peer(&m, "a", &[1; 32]).unwrap();
            let meta = UpdateMeta {
                inner_loss: 2.5,
                tokens: 10,
                bytes: 3,
                accepted_unix_millis: 4,
            };
            s.accept_update(&m, 0, "a", &[1, 2, 3], &meta).unwrap();
            s.accept_update(&m, 1, "a", &[4], &meta).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.machine().unwrap().unwrap(), m);
        assert_eq!(s.run().unwrap().unwrap().run_id, "r");
        assert_eq!(s.peer_key("a").unwrap().unwrap(), vec![1; 32]);
        let ups = s.updates(0).unwrap();
        assert_eq!(ups.len(), 1);
        assert_eq!(ups[0].1, vec![1, 2, 3]);
        let record = RoundRecord {
            round: 0,
            published: true,
            skip_reason: String::new(),
            peers: vec!["a".into()],
            mean_loss: 2.5,
            tokens: 10,
            aggregate_bytes: 2,
            aggregate_sha256: vec![0; 32],
            update_bytes: 3,
            model_version: 1,
            ended_unix_millis: 9,
            selection: Vec::new(),
            degraded: String::new(),
        };
        s.end_round(&m, &record, Some(&[7, 7]), None).unwrap();
        assert!(
            s.updates(0).unwrap().is_empty(),
            "published updates are dropped"
        );
        assert_eq!(s.updates(1).unwrap().len(), 1, "other rounds are kept");
        assert_eq!(s.aggregate(0).unwrap().unwrap(), vec![7, 7]);
        assert_eq!(s.rounds(0).unwrap(), vec![record]);
        assert!(s.rounds(1).unwrap().is_empty());
    }

    /// Three peers through `rounds` published rounds, the machine written after every event as
    /// the IO layer does; returns the machine and the stored record's size after each round.
    fn run_rounds(s: &Store, rounds: u64) -> (Coordinator, Vec<usize>) {
        let spec = ParticipationSpec {
            min_peers: 3,
            max_peers: 3,
            ..ParticipationSpec::default()
        };
        let mut m = Coordinator::new(RoundPolicy::try_from(&spec).unwrap());
        s.init(
            &RunRecord {
                run_id: "r".into(),
                spec_json: "{}".into(),
            },
            &m,
        )
        .unwrap();
        let peers = ["pa", "pb", "pc"].map(PeerId::from);
        for peer in &peers {
            m.apply(Event::Join {
                peer: peer.clone(),
                now_ms: 0,
            });
            s.register_peer(&m, peer.as_str(), &[1; 32]).unwrap();
        }
        let mut sizes = Vec::new();
        for round in 0..rounds {
            for (i, peer) in peers.iter().enumerate() {
                m.apply(Event::Submission {
                    peer: peer.clone(),
                    round,
                    digest: [i as u8; 32],
                    now_ms: round * 10 + 1,
                });
                let meta = UpdateMeta {
                    inner_loss: 1.0,
                    tokens: 1,
                    bytes: 1,
                    accepted_unix_millis: 0,
                };
                s.accept_update(&m, round, peer.as_str(), &[1], &meta)
                    .unwrap();
            }
            m.apply(Event::AggregateStored {
                round,
                digest: [9; 32],
            });
            let record = RoundRecord {
                round,
                published: true,
                skip_reason: String::new(),
                peers: peers.iter().map(ToString::to_string).collect(),
                mean_loss: 1.0,
                tokens: 3,
                aggregate_bytes: 1,
                aggregate_sha256: vec![9; 32],
                update_bytes: 3,
                model_version: round + 1,
                ended_unix_millis: round,
                selection: Vec::new(),
                degraded: String::new(),
            };
            s.end_round(&m, &record, Some(&[1]), None).unwrap();
            sizes.push(s.get_meta("machine").unwrap().unwrap().len());
        }
        (m, sizes)
    }

    #[test]
    fn the_machine_record_does_not_grow_with_the_rounds() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let (m, sizes) = run_rounds(&s, 60);
        assert_eq!(m.published().len(), 60);
        let (first, last) = (sizes[0], sizes[59]);
        // Only the digits of the clock and of the round numbers grow.
        assert!(last <= first + 16, "{first} → {last} bytes");
        let whole = serde_json::to_vec(&m).unwrap().len();
        assert!(
            whole > 10 * last,
            "the logs are {whole} bytes, the record {last}"
        );
        drop(s);
        let back = Store::open(dir.path()).unwrap().machine().unwrap().unwrap();
        assert_eq!(back, m, "logs and live state come back exactly");
    }

    #[test]
    fn a_machine_record_with_embedded_logs_still_loads_and_moves_them_to_the_tables() {
        let dir = tempfile::tempdir().unwrap();
        let m = {
            let s = Store::open(dir.path()).unwrap();
            let (m, _) = run_rounds(&s, 3);
            // The record as stores wrote it before the log tables.
            let whole = serde_json::to_vec(&m).unwrap();
            s.write(|tx| {
                tx.open_table(META)?.insert("machine", whole.as_slice())?;
                tx.delete_table(PUBLISHED_LOG)?;
                tx.delete_table(SKIPPED_LOG)?;
                Ok(())
            })
            .unwrap();
            m
        };
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.machine().unwrap().unwrap(), m);
        s.save_machine(&m).unwrap();
        let record = String::from_utf8(s.get_meta("machine").unwrap().unwrap()).unwrap();
        assert!(!record.contains("published"), "{record}");
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.machine().unwrap().unwrap(), m);
    }

    #[test]
    fn only_the_newest_checkpoints_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        for round in [10, 20, 30] {
            let rec = CheckpointRecord {
                round,
                bytes: 1,
                sha256: vec![0; 32],
                writer: "w".into(),
            };
            s.put_checkpoint(&rec, &[round as u8], 2).unwrap();
        }
        let kept: Vec<u64> = s.checkpoints().unwrap().iter().map(|c| c.round).collect();
        assert_eq!(kept, [20, 30]);
        assert!(s.checkpoint(10).unwrap().is_none());
        assert_eq!(s.checkpoint(30).unwrap().unwrap(), vec![30]);
    }

    #[test]
    fn a_corrupt_record_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.write(|tx| {
            tx.open_table(META)?
                .insert("machine", b"{not json".as_slice())?;
            Ok(())
        })
        .unwrap();
        let err = s.machine().unwrap_err().to_string();
        assert!(err.contains("machine") && err.contains("corrupt"), "{err}");
    }
}
