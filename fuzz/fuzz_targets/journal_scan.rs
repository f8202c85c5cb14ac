//! Journal files as the daemon reads them at start: any bytes give records, a torn tail
//! or a damage report inside the file, and replaying what was read never panics. Records
//! end only at the end of the file or at a tail of nothing but zeros.
#![no_main]

use libfuzzer_sys::fuzz_target;
use worknoded::journal::{format, state::State};

fuzz_target!(|data: &[u8]| {
    let mut bytes = Vec::with_capacity(format::HEADER_LEN + data.len());
    format::header(&mut bytes, format::JOURNAL_MAGIC, 0);
    bytes.extend_from_slice(data);
    let mut state = State::new(64);
    let mut from = format::HEADER_LEN;
    let mut budget = format::RESYNC_BUDGET;
    // Salvage's loop: resume at each next valid record.
    loop {
        match format::scan_from(&bytes, from, &mut budget, |_, r| state.apply(r)) {
            Ok(end) => {
                // The records end at the end of the file or where only zeros follow
                // (the pre-zeroed tail), at or after where this scan began.
                assert!(end as usize >= from && format::zero_tail_at(&bytes, end as usize));
                break;
            }
            Err(d) => {
                assert!((d.offset as usize) < bytes.len() && d.offset as usize >= from);
                assert!(!d.torn_tail || d.next_valid.is_none(), "a torn tail has nothing valid after it");
                match d.next_valid {
                    Some(n) => {
                        assert!(n > d.offset);
                        from = n as usize;
                    }
                    None => break,
                }
            }
        }
    }
    let _ = state.resume_seq();
});
