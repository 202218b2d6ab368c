//! cargo +nightly fuzz run decode: the decoder never panics, and whatever it accepts
//! re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary_codec::{DecodeLimits, decode, encode, inspect};

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits { max_total_elements: 1 << 24, ..DecodeLimits::default() };
    let header = inspect(data, &limits);
    if let Ok(c) = decode(data, &limits) {
        assert!(header.is_ok());
        assert_eq!(encode(&c).ok().as_deref(), Some(data));
    }
});
