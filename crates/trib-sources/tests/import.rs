//! Integration tests of file imports: real files in a temporary directory, in-memory or
//! embedded logs, and the reconciliation counts asserted exactly in every test.

// Helpers outside #[test] functions unwrap too: this is test code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// One module, so that `cargo test -p trib-sources import` selects every test here.
mod import {
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::{Value, json};
    use tempfile::TempDir;
    use trib_core::{Event, EventGate, OpenGate, QuarantinedMessage, Refusal};
    use trib_log::{
        AppendOutcome, EmbeddedLog, EmbeddedLogOptions, EventLog, LogError, MemoryLog, Record,
        StoredRecord,
    };
    use trib_sources::import::{
        ImportError, ImportMapping, ImportOptions, ImportReport, Progress, import_file,
    };

    fn data(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/import")
            .join(name)
    }

    fn mapping(toml_text: &str) -> ImportMapping {
        toml::from_str(toml_text).unwrap_or_else(|error| panic!("bad test mapping: {error}"))
    }

    /// The logs and state directory of one test.
    struct Setup {
        dir: TempDir,
        events: Box<dyn EventLog>,
        quarantine: Box<dyn EventLog>,
        gate: Arc<dyn EventGate>,
        normalize: trib_normalize::Options,
    }

    impl Setup {
        fn memory() -> Self {
            Self {
                dir: tempfile::tempdir().unwrap(),
                events: Box::new(MemoryLog::new(4)),
                quarantine: Box::new(MemoryLog::new(1)),
                gate: Arc::new(OpenGate),
                normalize: trib_normalize::Options::default(),
            }
        }

        fn state_dir(&self) -> PathBuf {
            self.dir.path().join("imports")
        }

        /// Writes `bytes` to a file named `name` in the test directory.
        fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        }

        fn options<'a>(
            &'a self,
            mapping: &'a ImportMapping,
            state_dir: &'a Path,
        ) -> ImportOptions<'a> {
            let mut options = ImportOptions::new(
                "crm",
                mapping,
                &self.normalize,
                Arc::clone(&self.gate),
                self.events.as_ref(),
                self.quarantine.as_ref(),
                state_dir,
            );
            options.batch_rows = 2;
            options.workers = 2;
            options
        }

        async fn import(
            &self,
            mapping: &ImportMapping,
            path: &Path,
        ) -> Result<ImportReport, ImportError> {
            let state_dir = self.state_dir();
            import_file(&self.options(mapping, &state_dir), path).await
        }

        async fn events(&self) -> Vec<Value> {
            let mut events: Vec<Value> = read_all(self.events.as_ref())
                .await
                .iter()
                .map(|record| serde_json::from_slice(&record.payload).unwrap())
                .collect();
            events.sort_by_key(|event| event["messageId"].as_str().map(row_of));
            events
        }

        async fn quarantined(&self) -> Vec<QuarantinedMessage> {
            let mut messages: Vec<QuarantinedMessage> = read_all(self.quarantine.as_ref())
                .await
                .iter()
                .map(|record| serde_json::from_slice(&record.payload).unwrap())
                .collect();
            messages.sort_by_key(|message| message.index);
            messages
        }
    }

    async fn read_all(log: &dyn EventLog) -> Vec<StoredRecord> {
        let mut records = Vec::new();
        for partition in 0..log.partition_count() {
            records.extend(log.read(partition, 0, usize::MAX).await.unwrap());
        }
        records
    }

    /// The messageId in a stored event or quarantined message.
    fn message_id(record: &StoredRecord) -> String {
        let value: Value = serde_json::from_slice(&record.payload).unwrap();
        value["messageId"].as_str().unwrap().to_owned()
    }

    /// The row number at the end of an import messageId.
    fn row_of(message_id: &str) -> u64 {
        message_id.rsplit('-').next().unwrap().parse().unwrap()
    }

    #[track_caller]
    fn assert_counts(
        report: &ImportReport,
        rows_read: u64,
        accepted: u64,
        quarantined: u64,
        duplicates_skipped: u64,
    ) {
        assert_eq!(
            (
                report.rows_read,
                report.accepted,
                report.quarantined,
                report.duplicates_skipped
            ),
            (rows_read, accepted, quarantined, duplicates_skipped),
            "rows_read, accepted, quarantined, duplicates_skipped of {report:#?}"
        );
        assert_eq!(
            report.rows_read,
            report.accepted + report.quarantined + report.duplicates_skipped
        );
        assert_eq!(report.by_reason.values().sum::<u64>(), report.quarantined);
    }

    fn reasons(report: &ImportReport) -> Vec<(&str, u64)> {
        report
            .by_reason
            .iter()
            .map(|(code, count)| (code.as_str(), *count))
            .collect()
    }

    const CUSTOMERS: &str = r#"
[[columns]]
column = "id"
target = "crm_id"
required = true

[[columns]]
column = "Email"
target = "email"

[[columns]]
column = "First Name"
target = "traits.first_name"

[[columns]]
column = "Last Name"
target = "traits.last_name"

[[columns]]
column = "City"
target = "traits.address.city"
"#;

    #[tokio::test]
    async fn csv_quirks_quotes_newlines_bom_and_unicode_are_imported() {
        let setup = Setup::memory();
        let report = setup
            .import(&mapping(CUSTOMERS), &data("customers_quirks.csv"))
            .await
            .unwrap();
        assert_counts(&report, 4, 4, 0, 0);
        assert!(report.completed && !report.already_imported && !report.gzip);
        assert_eq!(report.resumed_from_row, None);

        let events = setup.events().await;
        let sha16 = &report.sha256[..16];
        assert_eq!(
            events[0]["messageId"],
            format!("imp-{sha16}-2"),
            "the header is row 1"
        );
        assert_eq!(events[0]["type"], "identify");
        assert_eq!(events[0]["source"], "crm");
        // The BOM is not part of the first header name: "id" was found.
        assert_eq!(events[1]["traits"]["last_name"], "Hopper, Jr.");
        assert_eq!(events[2]["traits"]["address"]["city"], "Line 1\nLine 2");
        assert_eq!(events[2]["traits"]["first_name"], "José");
        assert_eq!(events[3]["traits"]["last_name"], "田中");
        assert_eq!(events[3]["messageId"], format!("imp-{sha16}-5"));

        // Identity: email in externalIds and traits; anonymousId derived from crm_id, no raw data.
        let first = &events[0];
        assert_eq!(first["traits"]["email"], "ada@example.com");
        assert_eq!(
            first["context"]["externalIds"],
            json!([
                {"id": "c1", "type": "crm_id", "collection": "users", "encoding": "none"},
                {"id": "ada@example.com", "type": "email", "collection": "users", "encoding": "none"},
            ])
        );
        let anonymous_id = first["anonymousId"].as_str().unwrap();
        assert!(anonymous_id.starts_with("imp:crm_id:"), "{anonymous_id}");
        assert!(!anonymous_id.contains("c1") || anonymous_id.len() == "imp:crm_id:".len() + 32);
        assert!(first.get("userId").is_none());
    }

    #[tokio::test]
    async fn semicolon_delimiter_and_quoted_delimiters() {
        let setup = Setup::memory();
        let mapping = mapping(
            r#"
        delimiter = ";"
        [[columns]]
        column = "id"
        target = "user_id"
        [[columns]]
        column = "plan"
        target = "traits.plan"
        "#,
        );
        let report = setup
            .import(&mapping, &data("customers_semicolon.csv"))
            .await
            .unwrap();
        assert_counts(&report, 3, 3, 0, 0);
        let events = setup.events().await;
        assert_eq!(events[1]["userId"], "2");
        assert_eq!(events[1]["traits"]["plan"], "free; trial");
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[tokio::test]
    async fn gzip_is_detected_by_magic_bytes_and_a_false_gz_name_is_refused() {
        let setup = Setup::memory();
        let plain = std::fs::read(data("customers_quirks.csv")).unwrap();
        let mapping = mapping(CUSTOMERS);

        let named_gz = setup.file("customers.csv.gz", &gzip(&plain));
        let report = setup.import(&mapping, &named_gz).await.unwrap();
        assert_counts(&report, 4, 4, 0, 0);
        assert!(report.gzip);

        // Compressed content under a plain name is still decompressed. It is another file (other
        // bytes, other hash), so its rows are new events.
        let unnamed = setup.file(
            "export.csv",
            &gzip(&[plain.as_slice(), b"c5,e@example.com,E,F,G,H\n"].concat()),
        );
        let report = setup.import(&mapping, &unnamed).await.unwrap();
        assert_counts(&report, 5, 5, 0, 0);
        assert!(report.gzip);

        let fake = setup.file("fake.csv.gz", &plain);
        let error = setup.import(&mapping, &fake).await.unwrap_err();
        assert!(matches!(error, ImportError::NotGzip { .. }), "{error}");
        assert_eq!(setup.events().await.len(), 9);
    }

    const ORDERS_CSV: &str = "\
id,email,total,placed_at
o1,a@example.com,10.50,2024-03-01T10:00:00Z
o2,b@example.com,twelve,2024-03-01T11:00:00Z
o3,c@example.com,7,2024-03-01T12:00:00Z
o4,d@example.com,3,2024-03-01T13:00:00Z,extra
o5,e@example.com,1
o6,f@example.com,2,2024-03-01T14:00:00Z
";

    const ORDERS_MAPPING: &str = r#"
kind = "track"
event = "Order Completed"
timestamp = { column = "placed_at" }

[[columns]]
column = "email"
target = "email"

[[columns]]
column = "id"
target = "properties.order_id"

[[columns]]
column = "total"
target = "properties.revenue"
type = "number"
"#;

    #[tokio::test]
    async fn bad_rows_in_the_middle_are_quarantined_and_the_rest_imported() {
        let setup = Setup::memory();
        let path = setup.file("orders.csv", ORDERS_CSV.as_bytes());
        let report = setup.import(&mapping(ORDERS_MAPPING), &path).await.unwrap();
        assert_counts(&report, 6, 3, 3, 0);
        assert_eq!(
            reasons(&report),
            vec![("invalid_value", 1), ("wrong_column_count", 2)]
        );

        let events = setup.events().await;
        let rows: Vec<u64> = events
            .iter()
            .map(|event| row_of(event["messageId"].as_str().unwrap()))
            .collect();
        assert_eq!(rows, vec![2, 4, 7]);
        assert_eq!(events[0]["type"], "track");
        assert_eq!(events[0]["event"], "Order Completed");
        assert_eq!(
            events[0]["properties"],
            json!({"order_id": "o1", "revenue": 10.5})
        );
        assert_eq!(events[0]["timestamp"], "2024-03-01T10:00:00Z");
        assert!(
            events[0].get("traits").is_none(),
            "track rows keep email in externalIds only"
        );

        let quarantined = setup.quarantined().await;
        let summary: Vec<(usize, &str, Option<&str>)> = quarantined
            .iter()
            .map(|message| {
                (
                    message.index,
                    message.code.as_str(),
                    message.field.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (3, "invalid_value", Some("properties.revenue")),
                (5, "wrong_column_count", None),
                (6, "wrong_column_count", None),
            ]
        );
        let invalid = &quarantined[0];
        assert_eq!(invalid.origin.as_deref(), Some("import:orders.csv"));
        assert_eq!(invalid.source, "crm");
        assert_eq!(
            invalid.message_id.as_deref(),
            Some(format!("imp-{}-3", &report.sha256[..16]).as_str())
        );
        assert!(
            invalid.reason.contains("row 3") && invalid.reason.contains("`total`"),
            "{}",
            invalid.reason
        );
        let raw: Value = serde_json::from_str(invalid.message.get()).unwrap();
        assert_eq!(
            raw,
            json!({"id": "o2", "email": "b@example.com", "total": "twelve", "placed_at": "2024-03-01T11:00:00Z"})
        );
        assert_eq!(
            invalid.message.get().find("\"id\""),
            Some(1),
            "header order is kept"
        );
        let extra: Value = serde_json::from_str(quarantined[1].message.get()).unwrap();
        assert_eq!(extra["__extra__"], json!(["extra"]));
        assert!(
            quarantined[1].reason.contains("5 fields, the header has 4"),
            "{}",
            quarantined[1].reason
        );
    }

    #[tokio::test]
    async fn invalid_utf8_quarantines_only_its_row() {
        let setup = Setup::memory();
        let mut bytes = b"id,name\nu1,Ada\nu2,Jos".to_vec();
        bytes.extend_from_slice(&[0xE9]); // "é" in Latin-1
        bytes.extend_from_slice(b"\nu3,Zo\xc3\xab\n");
        let path = setup.file("latin1.csv", &bytes);
        let mapping = mapping(
            r#"
        [[columns]]
        column = "id"
        target = "user_id"
        [[columns]]
        column = "name"
        target = "traits.name"
        "#,
        );
        let report = setup.import(&mapping, &path).await.unwrap();
        assert_counts(&report, 3, 2, 1, 0);
        assert_eq!(reasons(&report), vec![("invalid_utf8", 1)]);
        let quarantined = setup.quarantined().await;
        assert_eq!(quarantined[0].index, 3);
        assert_eq!(quarantined[0].field.as_deref(), Some("traits.name"));
        let raw: Value = serde_json::from_str(quarantined[0].message.get()).unwrap();
        assert_eq!(
            raw,
            json!({"id": "u2", "name": "Jos\u{FFFD}", "__invalid_utf8__": true})
        );
        assert_eq!(setup.events().await[1]["traits"]["name"], "Zoë");
    }

    fn big_csv(rows: u64) -> String {
        let mut text = String::from("id,email,score\n");
        for row in 1..=rows {
            // Every 7th row has a score that is not a number.
            let score = if row % 7 == 0 {
                "n/a".to_owned()
            } else {
                row.to_string()
            };
            text.push_str(&format!("u{row},user{row}@example.com,{score}\n"));
        }
        text
    }

    const SCORES: &str = r#"
[[columns]]
column = "id"
target = "user_id"
[[columns]]
column = "email"
target = "email"
[[columns]]
column = "score"
target = "traits.score"
type = "integer"
"#;

    fn embedded(dir: &Path, name: &str, partitions: u32) -> Box<dyn EventLog> {
        let mut options = EmbeddedLogOptions::new(dir.join(name));
        options.partitions = partitions;
        Box::new(EmbeddedLog::open(options).unwrap())
    }

    #[tokio::test]
    async fn an_interrupted_import_resumes_from_its_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scores.csv");
        std::fs::write(&path, big_csv(100)).unwrap();
        let mapping = mapping(SCORES);
        let normalize = trib_normalize::Options::default();
        let state_dir = dir.path().join("imports");

        // First run: stops after 45 rows, exactly like an interruption after a durable batch.
        let first = {
            let events = embedded(dir.path(), "events", 4);
            let quarantine = embedded(dir.path(), "quarantine", 1);
            let mut options = ImportOptions::new(
                "crm",
                &mapping,
                &normalize,
                Arc::new(OpenGate),
                events.as_ref(),
                quarantine.as_ref(),
                &state_dir,
            );
            options.batch_rows = 10;
            options.stop_after_rows = Some(45);
            import_file(&options, &path).await.unwrap()
        };
        assert!(!first.completed);
        assert_counts(&first, 45, 39, 6, 0);

        // Second run, with the logs reopened as after a restart: continues at row 47 (the header
        // is row 1, so the 45th data row is row 46).
        let events = embedded(dir.path(), "events", 4);
        let quarantine = embedded(dir.path(), "quarantine", 1);
        let mut options = ImportOptions::new(
            "crm",
            &mapping,
            &normalize,
            Arc::new(OpenGate),
            events.as_ref(),
            quarantine.as_ref(),
            &state_dir,
        );
        options.batch_rows = 10;
        let second = import_file(&options, &path).await.unwrap();
        assert!(second.completed);
        assert_eq!(second.resumed_from_row, Some(47));
        assert_counts(&second, 100, 86, 14, 0);
        assert_eq!(reasons(&second), vec![("invalid_value", 14)]);

        // Every row is stored exactly once, without a log deduplication id (the log's
        // in-memory deduplication index must not grow with imported files).
        let stored = read_all(events.as_ref()).await;
        assert_eq!(stored.len(), 86);
        assert!(stored.iter().all(|record| record.dedup_id.is_none()));
        let mut ids: Vec<String> = stored.iter().map(message_id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 86);
        assert!(ids[0].starts_with("imp-"), "{:?}", ids[0]);
        let quarantined = read_all(quarantine.as_ref()).await;
        assert_eq!(quarantined.len(), 14);
        assert!(quarantined.iter().all(|record| record.dedup_id.is_none()));
    }

    #[tokio::test]
    async fn an_interrupted_gzip_import_resumes_in_the_decompressed_stream() {
        let setup = Setup::memory();
        let text = big_csv(50).replace('\n', "\r\n");
        let path = setup.file("scores.csv.gz", &gzip(text.as_bytes()));
        let mapping = mapping(SCORES);
        let state_dir = setup.state_dir();
        let mut options = setup.options(&mapping, &state_dir);
        options.batch_rows = 4;
        options.stop_after_rows = Some(21);
        let first = import_file(&options, &path).await.unwrap();
        assert!(!first.completed);
        assert_counts(&first, 21, 18, 3, 0);

        options.stop_after_rows = None;
        let second = import_file(&options, &path).await.unwrap();
        assert!(second.completed && second.gzip);
        assert_eq!(second.resumed_from_row, Some(23));
        assert_counts(&second, 50, 43, 7, 0);
        let events = setup.events().await;
        assert_eq!(events.len(), 43);
        assert_eq!(
            events[20]["userId"], "u24",
            "u7, u14 and u21 are quarantined"
        );
        assert_eq!(events[42]["traits"]["score"], 50);
    }

    /// A log that fails one append after storing its records, as a crash between the durable
    /// append and the checkpoint would leave things.
    struct FailAfterStoring {
        inner: MemoryLog,
        appends: AtomicUsize,
        fail_on: usize,
    }

    #[async_trait::async_trait]
    impl EventLog for FailAfterStoring {
        fn partition_count(&self) -> u32 {
            self.inner.partition_count()
        }

        async fn append(&self, records: Vec<Record>) -> Result<Vec<AppendOutcome>, LogError> {
            let outcomes = self.inner.append(records).await?;
            if self.appends.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_on {
                return Err(LogError::WriterFailed {
                    reason: "simulated crash after the write".to_owned(),
                });
            }
            Ok(outcomes)
        }

        async fn read(
            &self,
            partition: u32,
            from: u64,
            max: usize,
        ) -> Result<Vec<StoredRecord>, LogError> {
            self.inner.read(partition, from, max).await
        }

        async fn end_offset(&self, partition: u32) -> Result<u64, LogError> {
            self.inner.end_offset(partition).await
        }

        async fn committed_offset(
            &self,
            consumer: &str,
            partition: u32,
        ) -> Result<Option<u64>, LogError> {
            self.inner.committed_offset(consumer, partition).await
        }

        async fn commit_offset(
            &self,
            consumer: &str,
            partition: u32,
            next: u64,
        ) -> Result<(), LogError> {
            self.inner.commit_offset(consumer, partition, next).await
        }

        async fn close(&self) -> Result<(), LogError> {
            self.inner.close().await
        }
    }

    #[tokio::test]
    async fn rows_appended_after_the_last_checkpoint_are_deduplicated_on_resume() {
        let mut setup = Setup::memory();
        setup.events = Box::new(FailAfterStoring {
            inner: MemoryLog::new(4),
            appends: AtomicUsize::new(0),
            fail_on: 3,
        });
        let text: String = (1..=10).fold(String::from("id\n"), |text, row| {
            text + &format!("u{row}\n")
        });
        let path = setup.file("ids.csv", text.as_bytes());
        let mapping = mapping("[[columns]]\ncolumn = \"id\"\ntarget = \"user_id\"\n");
        let state_dir = setup.state_dir();
        let mut options = setup.options(&mapping, &state_dir);
        options.batch_rows = 3;
        options.workers = 1;

        let error = import_file(&options, &path).await.unwrap_err();
        assert!(
            matches!(
                error,
                ImportError::Log {
                    log: "event log",
                    ..
                }
            ),
            "{error}"
        );
        // The third batch (rows 8 to 10 of the file) was stored but not checkpointed.
        assert_eq!(read_all(setup.events.as_ref()).await.len(), 9);

        let report = import_file(&options, &path).await.unwrap();
        assert!(report.completed);
        assert_counts(&report, 10, 7, 0, 3);
        assert_eq!(report.resumed_from_row.map(|row| row <= 8), Some(true));
        assert_eq!(read_all(setup.events.as_ref()).await.len(), 10);
    }

    /// The checkpoint file of `sha256` in the test's state directory.
    fn checkpoint_path(setup: &Setup, sha256: &str) -> PathBuf {
        setup
            .state_dir()
            .join("crm")
            .join(format!("{sha256}.checkpoint.json"))
    }

    #[tokio::test]
    async fn a_resume_from_an_older_checkpoint_still_stores_every_row_once() {
        let mut setup = Setup::memory();
        setup.events = Box::new(FailAfterStoring {
            inner: MemoryLog::new(4),
            appends: AtomicUsize::new(0),
            fail_on: 3,
        });
        let text: String = (1..=10).fold(String::from("id\n"), |text, row| {
            text + &format!("u{row}\n")
        });
        let path = setup.file("ids.csv", text.as_bytes());
        let mapping = mapping("[[columns]]\ncolumn = \"id\"\ntarget = \"user_id\"\n");
        let state_dir = setup.state_dir();
        let mut options = setup.options(&mapping, &state_dir);
        options.batch_rows = 3;
        options.workers = 1;

        // A run stopped before its first row leaves the checkpoint every run writes (durably)
        // before appending anything.
        options.stop_after_rows = Some(0);
        let first = import_file(&options, &path).await.unwrap();
        assert_counts(&first, 0, 0, 0, 0);
        let checkpoint = checkpoint_path(&setup, &first.sha256);
        let initial = std::fs::read(&checkpoint).unwrap();

        // The next run stores rows 2 to 10 (three batches) and fails; then its newer
        // checkpoints are lost, as a power failure could lose a rename that was not synced.
        options.stop_after_rows = None;
        import_file(&options, &path).await.unwrap_err();
        assert_eq!(read_all(setup.events.as_ref()).await.len(), 9);
        std::fs::write(&checkpoint, &initial).unwrap();

        // Another source's event with this file's messageId for row 11 is not this file's row.
        let sha16 = &first.sha256[..16];
        let foreign = json!({"messageId": format!("imp-{sha16}-11"), "source": "web",
            "type": "identify", "userId": "someone"});
        setup
            .events
            .append(vec![Record {
                key: "someone".to_owned(),
                dedup_id: None,
                timestamp_ms: 0,
                payload: serde_json::to_vec(&foreign).unwrap().into(),
            }])
            .await
            .unwrap();

        // The resumed run finds the nine rows in the log and stores only the tenth.
        let report = import_file(&options, &path).await.unwrap();
        assert!(report.completed);
        assert_eq!(report.resumed_from_row, Some(2));
        assert_counts(&report, 10, 1, 0, 9);
        let mut ids: Vec<String> = read_all(setup.events.as_ref())
            .await
            .iter()
            .filter(|record| record.key != "someone")
            .map(message_id)
            .collect();
        ids.sort_by_key(|id| row_of(id));
        let expected: Vec<String> = (2..=11).map(|row| format!("imp-{sha16}-{row}")).collect();
        assert_eq!(ids, expected, "every row exactly once");
        assert!(
            !checkpoint.exists(),
            "a completed import removes its checkpoint"
        );
    }

    #[tokio::test]
    async fn a_damaged_checkpoint_stops_the_import_instead_of_starting_over() {
        let setup = Setup::memory();
        let path = setup.file("scores.csv", big_csv(10).as_bytes());
        let mapping = mapping(SCORES);
        let state_dir = setup.state_dir();
        let mut options = setup.options(&mapping, &state_dir);
        options.stop_after_rows = Some(4);
        let first = import_file(&options, &path).await.unwrap();
        assert!(!first.completed);
        std::fs::write(checkpoint_path(&setup, &first.sha256), b"{\"version\": 2").unwrap();

        options.stop_after_rows = None;
        let error = import_file(&options, &path).await.unwrap_err();
        assert!(
            matches!(error, ImportError::DamagedCheckpoint { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("remove it"), "{error}");
        assert_eq!(
            read_all(setup.events.as_ref()).await.len()
                + read_all(setup.quarantine.as_ref()).await.len(),
            4,
            "nothing more was appended"
        );
    }

    #[tokio::test]
    async fn importing_the_same_file_again_creates_nothing_new() {
        let setup = Setup::memory();
        let path = setup.file("orders.csv", ORDERS_CSV.as_bytes());
        let mapping = mapping(ORDERS_MAPPING);
        let first = setup.import(&mapping, &path).await.unwrap();
        assert_counts(&first, 6, 3, 3, 0);

        // The ledger knows the file: nothing is read or appended.
        let again = setup.import(&mapping, &path).await.unwrap();
        assert!(again.already_imported && again.completed);
        assert_counts(&again, 6, 0, 0, 6);
        assert_eq!(
            again.previous.as_deref().map(|previous| previous.accepted),
            Some(3)
        );
        assert_eq!(again.sha256, first.sha256);

        // Forced through the log anyway: both logs are read first and every row is found there
        // (same source and messageId), so nothing is stored again.
        let state_dir = setup.state_dir();
        let mut options = setup.options(&mapping, &state_dir);
        options.reimport = true;
        let forced = import_file(&options, &path).await.unwrap();
        assert!(!forced.already_imported);
        assert_counts(&forced, 6, 0, 0, 6);
        assert_eq!(setup.events().await.len(), 3);
        assert_eq!(setup.quarantined().await.len(), 3);

        // A copy under another name is the same file.
        let copy = setup.file("orders-copy.csv", ORDERS_CSV.as_bytes());
        let report = setup.import(&mapping, &copy).await.unwrap();
        assert!(report.already_imported);
    }

    #[tokio::test]
    async fn ndjson_rows_become_events_and_bad_lines_are_quarantined() {
        let setup = Setup::memory();
        let mapping = mapping(
            r#"
        kind = "track"
        event = "Order Completed"
        timestamp = { column = "at" }

        [[columns]]
        column = "customer.id"
        target = "user_id"

        [[columns]]
        column = "customer.email"
        target = "email"

        [[columns]]
        column = "order_id"
        target = "properties.order_id"
        type = "integer"

        [[columns]]
        column = "total"
        target = "properties.revenue"
        type = "number"

        [[columns]]
        column = "items"
        target = "properties.products"
        type = "json"
        "#,
        );
        let report = setup
            .import(&mapping, &data("orders.ndjson"))
            .await
            .unwrap();
        assert_eq!(report.format, trib_sources::import::FileFormat::Ndjson);
        assert_counts(&report, 6, 3, 3, 0);
        assert_eq!(
            reasons(&report),
            vec![("invalid_json", 2), ("invalid_value", 1)]
        );

        let events = setup.events().await;
        assert_eq!(events[0]["userId"], "c1");
        assert_eq!(
            events[0]["properties"]["products"],
            json!([{"sku": "A1", "qty": 2}])
        );
        assert_eq!(events[0]["properties"]["order_id"], 1001);
        assert_eq!(events[0]["timestamp"], "2024-03-01T09:30:00Z");
        // Row numbers are line numbers; line 2 is blank.
        assert_eq!(row_of(events[1]["messageId"].as_str().unwrap()), 3);
        assert_eq!(
            events[1]["properties"]["revenue"], 5,
            "a string is read as its type"
        );
        assert_eq!(events[1]["timestamp"], "2024-03-02T09:00:00Z");
        assert_eq!(row_of(events[2]["messageId"].as_str().unwrap()), 7);
        assert_eq!(
            events[2]["userId"], "c4",
            "a top-level key with a dot wins over the path"
        );
        assert!(
            events[2]["properties"].get("products").is_none(),
            "null is absent"
        );

        let quarantined = setup.quarantined().await;
        let summary: Vec<(usize, &str, Option<&str>)> = quarantined
            .iter()
            .map(|message| {
                (
                    message.index,
                    message.code.as_str(),
                    message.field.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (4, "invalid_value", Some("timestamp")),
                (5, "invalid_json", None),
                (6, "invalid_json", None),
            ]
        );
        // Valid JSON is kept as is; other lines as a JSON string.
        assert_eq!(quarantined[1].message.get(), "\"this is not json\"");
        assert_eq!(quarantined[2].message.get(), "[1, 2, 3]");
        let line: Value = serde_json::from_str(quarantined[0].message.get()).unwrap();
        assert_eq!(line["at"], "not a time");
    }

    #[tokio::test]
    async fn typed_columns_are_parsed() {
        let setup = Setup::memory();
        let mapping = mapping(
            r#"
        [[columns]]
        column = "id"
        target = "user_id"
        [[columns]]
        column = "age"
        target = "traits.age"
        type = "integer"
        [[columns]]
        column = "score"
        target = "traits.score"
        type = "number"
        [[columns]]
        column = "active"
        target = "traits.active"
        type = "boolean"
        [[columns]]
        column = "birthday"
        target = "traits.birthday"
        type = "date"
        format = "%d/%m/%Y"
        [[columns]]
        column = "signed_up"
        target = "traits.signed_up_at"
        type = "timestamp"
        [[columns]]
        column = "products"
        target = "traits.products"
        type = "json"
        "#,
        );
        let report = setup.import(&mapping, &data("types.csv")).await.unwrap();
        assert_counts(&report, 3, 2, 1, 0);
        let events = setup.events().await;
        assert_eq!(
            events[0]["traits"],
            json!({
                "age": 42,
                "score": 19.5,
                "active": true,
                "birthday": "1990-03-01",
                "signed_up_at": "2024-03-01T08:30:00Z",
                "products": [{"sku": "A1", "qty": 2}],
            })
        );
        assert_eq!(
            events[1]["traits"],
            json!({
                "score": -3,
                "active": false,
                "birthday": "1985-12-31",
                "signed_up_at": "2024-03-02T08:00:00Z",
                "products": [],
            }),
            "an empty integer is absent"
        );
        let quarantined = setup.quarantined().await;
        assert_eq!(quarantined[0].index, 4);
        assert_eq!(quarantined[0].code, "invalid_value");
        assert_eq!(quarantined[0].field.as_deref(), Some("traits.age"));
    }

    #[tokio::test]
    async fn dropped_fields_required_values_and_missing_identity() {
        let setup = Setup::memory();
        let path = setup.file(
        "people.csv",
        b"id,email,age,plan\nu1,a@example.com,abc,pro\nu2,b@example.com,30,\n,,31,pro\n,c@example.com,32,free\n",
    );
        let mapping = mapping(
            r#"
        [[columns]]
        column = "id"
        target = "user_id"
        [[columns]]
        column = "email"
        target = "email"
        [[columns]]
        column = "age"
        target = "traits.age"
        type = "integer"
        on_error = "drop"
        [[columns]]
        column = "plan"
        target = "traits.plan"
        required = true
        "#,
        );
        let report = setup.import(&mapping, &path).await.unwrap();
        assert_counts(&report, 4, 2, 2, 0);
        assert_eq!(
            reasons(&report),
            vec![("missing_identity", 1), ("missing_value", 1)]
        );
        assert_eq!(
            report.fields_dropped.get("traits.age: invalid_value"),
            Some(&1)
        );
        let events = setup.events().await;
        assert_eq!(
            events[0]["traits"],
            json!({"email": "a@example.com", "plan": "pro"})
        );
        let anonymous_id = events[1]["anonymousId"].as_str().unwrap();
        assert!(anonymous_id.starts_with("imp:email:") && !anonymous_id.contains('@'));
    }

    /// Refuses events whose plan is "banned", as a schema would.
    struct PlanGate;

    impl EventGate for PlanGate {
        fn admit(&self, event: &mut Event) -> Result<(), Refusal> {
            let plan = event
                .traits
                .as_ref()
                .and_then(|traits| traits.get("plan"))
                .and_then(Value::as_str);
            if plan == Some("banned") {
                return Err(Refusal {
                    code: "schema_violation".to_owned(),
                    field: Some("traits.plan".to_owned()),
                    reason: "plan must not be banned".to_owned(),
                    schema: Some("Customer/1-0-0".to_owned()),
                });
            }
            if let Some(traits) = event.traits.as_mut() {
                traits.remove("internal");
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn gate_refusals_are_quarantined_and_its_changes_kept() {
        let mut setup = Setup::memory();
        setup.gate = Arc::new(PlanGate);
        let path = setup.file("plans.csv", b"id,plan,internal\nu1,pro,x\nu2,banned,y\n");
        let mapping = mapping(
            r#"
        [[columns]]
        column = "id"
        target = "user_id"
        [[columns]]
        column = "plan"
        target = "traits.plan"
        [[columns]]
        column = "internal"
        target = "traits.internal"
        "#,
        );
        let report = setup.import(&mapping, &path).await.unwrap();
        assert_counts(&report, 2, 1, 1, 0);
        assert_eq!(reasons(&report), vec![("schema_violation", 1)]);
        assert_eq!(setup.events().await[0]["traits"], json!({"plan": "pro"}));
        let quarantined = setup.quarantined().await;
        assert_eq!(quarantined[0].schema.as_deref(), Some("Customer/1-0-0"));
        assert_eq!(quarantined[0].field.as_deref(), Some("traits.plan"));
    }

    #[tokio::test]
    async fn file_level_problems_fail_before_anything_is_imported() {
        let setup = Setup::memory();
        let customers = mapping(CUSTOMERS);

        let error = setup
            .import(
                &customers,
                &setup.file("other.csv", b"id,mail\n1,a@example.com\n"),
            )
            .await
            .unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, ImportError::MissingColumns { .. }),
            "{message}"
        );
        assert!(message.contains("`Email` (columns[1])"), "{message}");
        assert!(message.contains("the header has: id, mail"), "{message}");

        let error = setup
            .import(&customers, &setup.file("twice.csv", b"id,Email,Email\n"))
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("`Email` appears twice"),
            "{error}"
        );

        let error = setup
            .import(&customers, &setup.file("empty.csv", b""))
            .await
            .unwrap_err();
        assert!(
            matches!(error, ImportError::MissingHeader { .. }),
            "{error}"
        );

        let error = setup
            .import(&customers, &setup.dir.path().join("missing.csv"))
            .await
            .unwrap_err();
        assert!(matches!(error, ImportError::FileNotFound { .. }), "{error}");

        let error = setup
            .import(&customers, &setup.file("notes.txt", b"id\n"))
            .await
            .unwrap_err();
        assert!(
            matches!(error, ImportError::UnknownFormat { .. }),
            "{error}"
        );

        let invalid =
            mapping("kind = \"track\"\n[[columns]]\ncolumn = \"a\"\ntarget = \"traits\"\n");
        let error = setup
            .import(&invalid, &data("customers_quirks.csv"))
            .await
            .unwrap_err();
        let message = error.to_string();
        assert!(message.contains("event: is required"), "{message}");
        assert!(message.contains("columns[0].target"), "{message}");

        assert!(setup.events().await.is_empty());
        assert!(setup.quarantined().await.is_empty());
    }

    #[test]
    fn mapping_problems_name_their_paths() {
        let problems = mapping(
            r#"
        format = "ndjson"
        delimiter = ";;"
        event = "Signed Up"
        time_zone = "Mars/Olympus"
        [[columns]]
        column = "a"
        target = "traits.address"
        type = "json"
        [[columns]]
        column = "b"
        target = "traits.address.city"
        [[columns]]
        column = "c"
        target = "email"
        type = "boolean"
        [[columns]]
        column = "d"
        target = "traits.when"
        type = "integer"
        format = "%Y"
        normalize = "email"
        [[columns]]
        column = "e"
        target = "properties.total"
        [[columns]]
        column = "f"
        target = "id.Shop Id"
        "#,
        )
        .validate();
        let paths: Vec<&str> = problems.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "delimiter",
                "event",
                "time_zone",
                "columns[1].target",
                "columns[2].type",
                "columns[3].format",
                "columns[3].normalize",
                "columns[4].target",
                "columns[5].target",
            ],
            "{problems:#?}"
        );
        assert!(mapping(CUSTOMERS).validate().is_empty());
        assert!(
            toml::from_str::<ImportMapping>("colums = []").is_err(),
            "unknown fields are refused"
        );
    }

    #[tokio::test]
    async fn progress_is_reported_and_the_report_serializes() {
        let setup = Setup::memory();
        let path = setup.file("scores.csv", big_csv(30).as_bytes());
        let mapping = mapping(SCORES);
        let state_dir = setup.state_dir();
        let seen = std::sync::Mutex::new(Vec::<Progress>::new());
        let callback = |progress: &Progress| seen.lock().unwrap().push(*progress);
        let mut options = setup.options(&mapping, &state_dir);
        options.progress = Some(&callback);
        let report = import_file(&options, &path).await.unwrap();
        assert_counts(&report, 30, 26, 4, 0);
        let seen = seen.into_inner().unwrap();
        let last = seen.last().unwrap();
        assert_eq!(last.rows, 30);
        let size = std::fs::metadata(&path).unwrap().len();
        assert_eq!((last.bytes, last.total_bytes), (size, Some(size)));

        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["rows_read"], 30);
        assert_eq!(json["by_reason"]["invalid_value"], 4);
        let back: ImportReport = serde_json::from_value(json).unwrap();
        assert_eq!(back.accepted, report.accepted);
    }

    #[tokio::test]
    async fn import_file_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let setup = Setup::memory();
        let mapping = mapping(SCORES);
        let state_dir = setup.state_dir();
        let options = setup.options(&mapping, &state_dir);
        let future = import_file(&options, Path::new("x.csv"));
        assert_send(&future);
    }

    #[tokio::test]
    async fn consent_columns_become_segment_category_preferences() {
        let setup = Setup::memory();
        let path = setup.file(
            "consents.csv",
            b"id,Email,Newsletter,Ads\nc1,ada@example.com,yes,0\nc2,bob@example.com,no,\nc3,cy@example.com,maybe,1\n",
        );
        let mapping = mapping(
            r#"
[[columns]]
column = "id"
target = "crm_id"
required = true

[[columns]]
column = "Email"
target = "email"

[[columns]]
column = "Newsletter"
target = "consent.email_marketing"

[[columns]]
column = "Ads"
target = "consent.advertising"
type = "boolean"
"#,
        );
        let report = setup.import(&mapping, &path).await.unwrap();
        assert_counts(&report, 3, 2, 1, 0);
        assert_eq!(reasons(&report), vec![("invalid_value", 1)]);
        let events = setup.events().await;
        assert_eq!(
            events[0]["context"]["consent"],
            json!({"categoryPreferences": {"email_marketing": true, "advertising": false}})
        );
        assert_eq!(
            events[1]["context"]["consent"],
            json!({"categoryPreferences": {"email_marketing": false}})
        );
        let quarantined = setup.quarantined().await;
        assert_eq!(
            quarantined[0].field.as_deref(),
            Some("consent.email_marketing")
        );
        assert!(
            quarantined[0].reason.contains("true or false"),
            "{}",
            quarantined[0].reason
        );
    }
}
