//! The data center's conformance suite ([`meridian_tests::conformance`])
//! against the SQLite backend, opened as the node opens it
//! (`DataCenter::open` on a file) and written through its writer, whose
//! savepoints are the transactions. The same checks run against PostgreSQL
//! in `tests/postgres.rs`.

use meridian_node::Error;
use meridian_node::service_center::data_center::DataCenter;
use meridian_tests::conformance::{Backend, CHECKS, Job, Output};

struct Sqlite {
    data_center: DataCenter,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Sqlite {
    fn open() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data_center = DataCenter::open(&dir.path().join("data.db")).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Sqlite {
            data_center,
            runtime,
            _dir: dir,
        }
    }
}

impl Backend for Sqlite {
    fn run(&self, job: Job) -> Result<Output, Error> {
        self.runtime.block_on(self.data_center.write(job))
    }
}

#[test]
fn sqlite_passes_the_conformance_suite() {
    for (name, check) in CHECKS {
        eprintln!("sqlite: {name}");
        check(&Sqlite::open());
    }
}
