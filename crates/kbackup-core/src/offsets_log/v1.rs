//! Frames of version 1 logs (read forever, never written): `u32 body_len , u32 crc(body) ,
//! body`, with no CRC on the length (docs/format.md, "Version 1").

use super::{BODY_FIXED, MAX_BODY_LEN};
use crate::format::frame;

/// Whether a version 1 frame could start at `pos`: its length is consistent with its own
/// group and metadata lengths and its CRC matches. Finding one after a length that runs past
/// the end of the file proves that length damaged (version 1 cannot detect it otherwise).
fn v1_frame_at(data: &[u8], pos: usize) -> bool {
    let Some(rest) = data.get(pos..) else {
        return false;
    };
    let u32_at = |i: usize| {
        rest.get(i..i + 4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
    };
    let (Some(len), Some(crc)) = (u32_at(0), u32_at(4)) else {
        return false;
    };
    if !(BODY_FIXED..=MAX_BODY_LEN).contains(&len) || 8 + len > rest.len() {
        return false;
    }
    let body = &rest[8..8 + len];
    let glen = u16::from_be_bytes([body[16], body[17]]) as usize;
    let mlen = body
        .get(18 + glen..22 + glen)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize);
    mlen == Some(len - BODY_FIXED - glen) && crc32fast::hash(body) == crc as u32
}

/// The frame at `pos` of a version 1 file, with the same torn/corrupt rules as
/// [`frame::check`](crate::format::frame::check) as far as version 1 allows: its length has no CRC, so a length that runs
/// past the end of the file is torn unless a valid frame starts later in the file.
pub(super) fn check(data: &[u8], pos: usize) -> frame::Check {
    let rest = &data[pos.min(data.len())..];
    if rest.is_empty() {
        return frame::Check::End;
    }
    if rest.iter().all(|&b| b == 0) {
        return frame::Check::Torn(format!("zero-filled tail ({} bytes)", rest.len()));
    }
    if rest.len() < 8 {
        return frame::Check::Torn(format!("incomplete frame header ({} bytes)", rest.len()));
    }
    let len = u32::from_be_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_be_bytes(rest[4..8].try_into().expect("4 bytes"));
    if !(BODY_FIXED..=MAX_BODY_LEN).contains(&len) {
        return frame::Check::Corrupt(format!("impossible length {len}"));
    }
    if 8 + len > rest.len() {
        if (pos + 8 + BODY_FIXED..data.len()).any(|p| v1_frame_at(data, p)) {
            return frame::Check::Corrupt(format!(
                "damaged length field ({len} bytes announced, valid entries follow)"
            ));
        }
        return frame::Check::Torn(format!(
            "incomplete frame: {len} bytes announced, {} present",
            rest.len() - 8
        ));
    }
    if crc32fast::hash(&rest[8..8 + len]) != crc {
        return frame::Check::Corrupt("CRC mismatch: the body is damaged".into());
    }
    frame::Check::Complete {
        body: pos + 8..pos + 8 + len,
        next: pos + 8 + len,
    }
}
