//! Per-stream message compression, chosen by the client through the invoke
//! metadata key `drpc-compression` (values `snappy` and `minlz-fastest`, both
//! block formats, as in cockroachdb/drpc). The whole Message payload is
//! compressed before it is split into frames; the server answers in kind.

use crate::status::{Code, Status};

/// The invoke metadata key that selects a stream's compression.
pub const METADATA_KEY: &str = "drpc-compression";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Snappy block format.
    Snappy,
    /// MinLZ block format at its fastest level.
    MinLzFastest,
}

impl Compression {
    /// The codec named by a metadata value.
    pub fn from_name(name: &str) -> Option<Compression> {
        match name {
            "snappy" => Some(Compression::Snappy),
            "minlz-fastest" => Some(Compression::MinLzFastest),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::Snappy => "snappy",
            Compression::MinLzFastest => "minlz-fastest",
        }
    }

    /// The codec a call's metadata asks for: `Ok(None)` when none, an
    /// Unimplemented status for a name we do not know.
    pub fn from_metadata(md: &crate::Metadata) -> Result<Option<Compression>, Status> {
        match md.get(METADATA_KEY) {
            None => Ok(None),
            Some(name) => Compression::from_name(name).map(Some).ok_or_else(|| {
                Status::new(
                    Code::Unimplemented,
                    format!("unknown compression {name:?} (known: snappy, minlz-fastest)"),
                )
            }),
        }
    }

    pub fn compress(self, data: &[u8]) -> Result<Vec<u8>, Status> {
        let result = match self {
            Compression::Snappy => snap::raw::Encoder::new()
                .compress_vec(data)
                .map_err(|e| e.to_string()),
            Compression::MinLzFastest => {
                minlz::minlz::compress_level(data, minlz::minlz::Level::Fastest)
                    .map_err(|e| e.to_string())
            }
        };
        result.map_err(|e| Status::internal(format!("{} compression failed: {e}", self.name())))
    }

    /// Decompresses a payload whose decompressed size must not exceed `max`.
    /// Under `minlz-fastest`, a block that does not start with MinLZ's zero
    /// byte is a Snappy block, as MinLZ's block format defines (cockroachdb/drpc
    /// sends those for messages of 4 KiB and less).
    pub fn decompress(self, data: &[u8], max: usize) -> Result<Vec<u8>, Status> {
        let corrupt = |e: String| Status::new(Code::DataLoss, format!("corrupt {} message: {e}", self.name()));
        let snappy_block = match self {
            Compression::Snappy => true,
            Compression::MinLzFastest => data.first().is_some_and(|&b| b != 0),
        };
        let len = if snappy_block {
            snap::raw::decompress_len(data).map_err(|e| corrupt(e.to_string()))?
        } else {
            minlz::minlz::decompressed_len(data).map_err(|e| corrupt(e.to_string()))?
        };
        if len > max {
            return Err(Status::resource_exhausted(format!(
                "decompressed message of {len} bytes exceeds the maximum of {max} bytes"
            )));
        }
        if snappy_block {
            snap::raw::Decoder::new().decompress_vec(data).map_err(|e| corrupt(e.to_string()))
        } else {
            minlz::minlz::decompress(data).map_err(|e| corrupt(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_bounds() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for c in [Compression::Snappy, Compression::MinLzFastest] {
            let packed = c.compress(&data).unwrap();
            assert!(packed.len() < data.len() / 2, "{c:?} compresses");
            assert_eq!(c.decompress(&packed, data.len()).unwrap(), data);
            assert_eq!(
                c.decompress(&packed, data.len() - 1).unwrap_err().code(),
                Code::ResourceExhausted
            );
            assert_eq!(
                c.decompress(b"\xff\xff\xff\xff\x0fgarbage", usize::MAX)
                    .unwrap_err()
                    .code(),
                Code::DataLoss
            );
            assert!(c
                .decompress(&c.compress(b"").unwrap(), 0)
                .unwrap()
                .is_empty());
            assert_eq!(Compression::from_name(c.name()), Some(c));
        }
        let md = crate::Metadata::from([(METADATA_KEY.to_string(), "zstd".to_string())]);
        assert_eq!(
            Compression::from_metadata(&md).unwrap_err().code(),
            Code::Unimplemented
        );
    }

    #[test]
    fn snappy_block_matches_the_reference_encoding() {
        // Snappy block of "aaaaaaaaaa": varint length 10, literal "a", copy of 9.
        let packed = Compression::Snappy.compress(b"aaaaaaaaaa").unwrap();
        assert_eq!(packed[0], 10);
        assert_eq!(
            snap::raw::Decoder::new().decompress_vec(&packed).unwrap(),
            b"aaaaaaaaaa"
        );
    }
}
