//! f64 fields of persisted state as decimal strings, so a restored state continues bit for bit:
//! Rust prints the shortest decimal that parses back to the same bits and parses it exactly,
//! while serde_json's own float parser may land one ulp off (its `float_roundtrip` feature is
//! not enabled in this workspace).

use serde::{Deserialize, Deserializer, Serializer, de::Error};

pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(x)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(D::Error::custom)
}

/// The same for an optional f64.
pub mod option {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(x: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match x {
            Some(x) => s.collect_str(x),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| s.parse().map_err(D::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct T {
        #[serde(with = "super")]
        x: f64,
        #[serde(with = "super::option")]
        y: Option<f64>,
    }

    #[test]
    fn round_trips_exactly() {
        for x in [
            24.502336338418186,
            0.1,
            -1e300,
            5e-324,
            7.7064528781258375,
            0.0,
            -0.0,
        ] {
            for y in [None, Some(x)] {
                let t = T { x, y };
                let back: T = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
                assert_eq!(back.x.to_bits(), x.to_bits());
                assert_eq!(back.y.map(f64::to_bits), y.map(f64::to_bits));
            }
        }
    }
}
