//! Framing of records in a segment file.
//!
//! A segment is a sequence of frames: `[len: u32 LE][crc32c(payload): u32 LE]
//! [payload; len]`. The checksum covers the payload only; a frame whose
//! length runs past the end of the file or whose checksum does not match
//! ends the valid part of the segment (a torn write at a crash, or damage).

/// Bytes in a frame header.
pub const HEADER: usize = 8;

/// Smallest payload a record can have (version, kind, queue id; see
/// [`crate::codec`]). A shorter frame is damage, never a record: in
/// particular eight zero bytes, whose CRC32C matches, are not a frame.
pub const MIN_PAYLOAD: usize = 2 + crate::QueueId::LEN;

/// Largest payload accepted when scanning. Anything larger is damage: the
/// receiver caps messages far below this.
pub const MAX_PAYLOAD: usize = 1 << 30;

/// Appends a frame holding the payload that `write` appends to `out`.
///
/// The payload is written in place after a reserved header, so the message
/// is copied once, from the session's buffer into the batch buffer.
pub fn append(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    write(out);
    let payload = &out[start + HEADER..];
    let len = u32::try_from(payload.len()).expect("record larger than 4 GiB");
    let crc = crc32c::crc32c(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Why a scan stopped before the end of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// The last frame is incomplete (a write cut short).
    Torn,
    /// A frame's checksum or length is wrong.
    Corrupt,
}

/// Iterates over the frames of a segment's bytes.
///
/// Yields `(offset, payload)`; when it stops early, [`Frames::damage`] says
/// why and [`Frames::valid_len`] where the valid prefix ends.
pub struct Frames<'a> {
    data: &'a [u8],
    pos: usize,
    damage: Option<Damage>,
}

impl<'a> Frames<'a> {
    /// Frames of `data`, a whole segment file.
    pub fn new(data: &'a [u8]) -> Self {
        Frames {
            data,
            pos: 0,
            damage: None,
        }
    }

    /// Length of the valid prefix scanned so far.
    pub fn valid_len(&self) -> usize {
        self.pos
    }

    /// Why the scan stopped early, if it did.
    pub fn damage(&self) -> Option<Damage> {
        self.damage
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = (usize, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.damage.is_some() || self.pos == self.data.len() {
            return None;
        }
        let rest = &self.data[self.pos..];
        if rest.len() < HEADER {
            self.damage = Some(Damage::Torn);
            return None;
        }
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if !(MIN_PAYLOAD..=MAX_PAYLOAD).contains(&len) {
            // Zeros to the end are a zero-filled tail (a file system may
            // extend a file before the data lands): torn, not corrupt.
            self.damage = Some(if rest.iter().all(|&b| b == 0) {
                Damage::Torn
            } else {
                Damage::Corrupt
            });
            return None;
        }
        if rest.len() < HEADER + len {
            self.damage = Some(Damage::Torn);
            return None;
        }
        let payload = &rest[HEADER..HEADER + len];
        if crc32c::crc32c(payload) != crc {
            // A checksum failure on the last frame (nothing but zeros after
            // it, as in a preallocated file) is a torn write whose header
            // made it to disk before all of its payload did.
            self.damage = Some(if rest[HEADER + len..].iter().all(|&b| b == 0) {
                Damage::Torn
            } else {
                Damage::Corrupt
            });
            return None;
        }
        let at = self.pos;
        self.pos += HEADER + len;
        Some((at, payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            append(&mut out, |o| o.extend_from_slice(p));
        }
        out
    }

    #[test]
    fn round_trip() {
        let data = segment(&[b"first record", b"second record", b"3rd record!!"]);
        let got: Vec<_> = Frames::new(&data).map(|(_, p)| p).collect();
        assert_eq!(
            got,
            vec![&b"first record"[..], b"second record", b"3rd record!!"]
        );
    }

    #[test]
    fn every_cut_is_a_torn_tail_at_a_frame_boundary() {
        let data = segment(&[b"alpha record", b"beta record!"]);
        let first_end = HEADER + 12;
        for cut in 0..data.len() {
            let mut f = Frames::new(&data[..cut]);
            let n = f.by_ref().count();
            let expect_frames = usize::from(cut >= first_end);
            assert_eq!(n, expect_frames, "cut {cut}");
            if cut == 0 || cut == first_end {
                assert_eq!(f.damage(), None, "cut {cut}");
            } else {
                assert_eq!(f.damage(), Some(Damage::Torn), "cut {cut}");
            }
            assert_eq!(f.valid_len(), if cut >= first_end { first_end } else { 0 });
        }
    }

    #[test]
    fn flipped_byte_in_a_middle_frame_is_corruption() {
        let mut data = segment(&[b"alpha record", b"beta record!", b"gamma record"]);
        data[HEADER + 2] ^= 0x40;
        let mut f = Frames::new(&data);
        assert_eq!(f.by_ref().count(), 0);
        assert_eq!(f.damage(), Some(Damage::Corrupt));
        assert_eq!(f.valid_len(), 0);
    }

    #[test]
    fn absurd_length_is_corruption() {
        let mut data = segment(&[b"a whole record"]);
        data[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut f = Frames::new(&data);
        assert_eq!(f.next(), None);
        assert_eq!(f.damage(), Some(Damage::Corrupt));
    }

    #[test]
    fn zero_filled_tail_is_torn_and_short_frames_are_damage() {
        let mut data = segment(&[b"a whole record"]);
        let end = data.len();
        data.extend_from_slice(&[0; 64]);
        let mut f = Frames::new(&data);
        assert_eq!(f.by_ref().count(), 1);
        assert_eq!((f.damage(), f.valid_len()), (Some(Damage::Torn), end));

        // A frame cut short inside a zero-filled (preallocated) file.
        let mut data = segment(&[b"a whole record", b"a torn record"]);
        let n = data.len();
        data[n - 4..].fill(0);
        data.extend_from_slice(&[0; 64]);
        let mut f = Frames::new(&data);
        assert_eq!(f.by_ref().count(), 1);
        assert_eq!((f.damage(), f.valid_len()), (Some(Damage::Torn), end));

        // An empty payload has a matching CRC (0) but is no record.
        let mut data = segment(&[b"a whole record"]);
        append(&mut data, |_| {});
        data.extend_from_slice(&segment(&[b"after the bad"]));
        let mut f = Frames::new(&data);
        assert_eq!(f.by_ref().count(), 1);
        assert_eq!(f.damage(), Some(Damage::Corrupt));
    }
}
