//! Snapshot files: any bytes are a snapshot read whole, or a reason to skip it; never a
//! panic, and a skipped snapshot leaves the state untouched.
#![no_main]

use libfuzzer_sys::fuzz_target;
use worknoded::journal::{format, state::State, store};

fuzz_target!(|data: &[u8]| {
    for raw in [false, true] {
        let mut bytes = Vec::new();
        if !raw {
            format::header(&mut bytes, format::SNAPSHOT_MAGIC, 0);
        }
        bytes.extend_from_slice(data);
        let mut state = State::new(64);
        if store::read_snapshot_bytes(&bytes, &mut state).is_err() {
            assert_eq!(state.records, 0, "a refused snapshot applied records");
        }
    }
});
