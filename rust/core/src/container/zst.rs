//! `.dmp.zst`: stream-decompress into an unlinked spool file, refusing more than a set size.
//!
//! libzstd decompresses a frame on one thread (its multi-threading is for compression), so
//! the decoder streams straight into the spool with large buffers; nothing is held whole in RAM.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};

use super::OpenOptions;
use crate::error::{Error, Result};

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// Largest window accepted (2 GiB, what `zstd --long=31` writes); bigger windows are refused.
const WINDOW_LOG_MAX: u32 = 31;

pub fn is_zstd(magic: &[u8; 4]) -> bool {
    *magic == ZSTD_MAGIC
}

/// Decompress `src` into an unlinked spool file. A stream that ends early (a `.zst` cut short
/// while it was written or copied) keeps what decompressed, with a note saying where it ended;
/// the container then reads it as a truncated dump. A stream that yields nothing is an error.
pub fn spool(mut src: File, opts: &OpenOptions) -> Result<(File, Option<String>)> {
    src.seek(SeekFrom::Start(0))?;
    let mut spool = match &opts.spool_dir {
        Some(d) => tempfile::tempfile_in(d),
        None => tempfile::tempfile(),
    }
    .map_err(|e| Error::io(format!("cannot create a spool file for decompression: {e}")))?;
    let mut dec = zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(1 << 20, src))
        .map_err(|e| Error::format(0, format!("zstd: {e}")))?;
    dec.window_log_max(WINDOW_LOG_MAX)
        .map_err(|e| Error::format(0, format!("zstd: {e}")))?;
    let mut buf = vec![0u8; 4 << 20];
    let mut total = 0u64;
    let mut note = None;
    loop {
        let n = match dec.read(&mut buf) {
            Ok(n) => n,
            Err(e) if total > 0 => {
                note = Some(format!(
                    "the zstd stream ends early or is corrupt after {total} decompressed bytes ({e}); what decompressed is read"
                ));
                break;
            }
            Err(e) => {
                return Err(Error::format(
                    0,
                    format!(
                        "zstd stream is corrupt or truncated before any byte decompressed: {e}"
                    ),
                ))
            }
        };
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > opts.max_decompressed {
            return Err(Error::limit(format!(
                "decompressed size exceeds the limit of {} bytes (possible decompression bomb); raise max_decompressed to accept it",
                opts.max_decompressed
            )));
        }
        spool
            .write_all(&buf[..n])
            .map_err(|e| Error::io(format!("writing the spool file: {e}")))?;
    }
    spool.flush()?;
    Ok((spool, note))
}
