//! The detections of one string, from every source of a profile at once: the built-in
//! scan and each custom regex. Sources are searched lazily and their look-ahead kept, so
//! a string costs one built-in scan plus one search per custom regex and detection.
//!
//! A leaf next to `detectors` and `custom`: it sees the profile only through
//! [`Sources`], never through `MaskProfile`.

use super::custom::CustomDetector;
use super::detectors::{Builtin, Detectors};

/// Every custom detector (see [`detections`]).
pub(super) const ALL_CUSTOM: u32 = u32::MAX;

/// What a string is searched with: a profile's detectors and the counter slot of each
/// built-in.
#[derive(Clone, Copy)]
pub(super) struct Sources<'p> {
    pub(super) detectors: &'p Detectors,
    pub(super) custom: &'p [CustomDetector],
    /// Counter slot of each built-in, by `Builtin as usize` (meaningful only if enabled).
    pub(super) builtin_slots: &'p [usize; 8],
    /// The slot a built-in without one would count under (never used for enabled ones).
    pub(super) fallback_slot: usize,
}

impl Sources<'_> {
    pub(super) fn builtin_slot(&self, b: Builtin) -> usize {
        self.builtin_slots.get(b as usize).copied().unwrap_or(self.fallback_slot)
    }
}

/// The first detection of `s` and an iterator over the rest, or `None` when `s` has
/// none (the common case, which then costs only the built-in scan). `custom` has bit
/// `i` set for each custom detector to run; `pending` is the caller's look-ahead
/// storage for them, one slot per custom detector (left alone when none runs).
#[inline]
pub(super) fn detections<'p, 's, 'c>(
    src: Sources<'p>,
    s: &'s str,
    custom: u32,
    pending: &'c mut [Pending],
) -> Option<(Found, Matches<'p, 's, 'c>)> {
    let custom = if src.custom.is_empty() { 0 } else { custom };
    let builtin = if custom == 0 {
        let h = src.detectors.find(s, 0)?;
        Pending::At(Found { start: h.start, end: h.end, slot: src.builtin_slot(h.kind) })
    } else {
        Pending::Stale
    };
    let pending = if custom == 0 { &mut [] } else { pending.get_mut(..src.custom.len()).unwrap_or_default() };
    for (i, slot) in pending.iter_mut().enumerate() {
        *slot = if custom & (1 << i) == 0 { Pending::Exhausted } else { Pending::Stale };
    }
    let mut matches = Matches { src, s, pos: 0, builtin, custom: pending };
    let first = matches.next()?;
    Some((first, matches))
}

/// One chosen detection: byte range and counter slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Found {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) slot: usize,
}

/// The next detection of one source (built-ins, or one custom regex) at or after the
/// iterator position; `Stale` means "search again from the current position".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pending {
    Stale,
    Exhausted,
    At(Found),
}

impl Pending {
    /// Keeps a detection that is still ahead of `pos`, otherwise searches again.
    fn refresh(self, pos: usize, search: impl FnOnce() -> Option<Found>) -> Pending {
        match self {
            Pending::At(f) if f.start >= pos => self,
            Pending::Exhausted => self,
            _ => search().map_or(Pending::Exhausted, Pending::At),
        }
    }
}

/// Non-overlapping detections of a string in order: leftmost wins, then longest, then
/// built-ins before custom detectors. Each source is searched lazily and searched again
/// only when the chosen detection overlaps what it had found.
pub(super) struct Matches<'p, 's, 'c> {
    src: Sources<'p>,
    s: &'s str,
    pos: usize,
    builtin: Pending,
    /// One per custom detector, in profile order.
    custom: &'c mut [Pending],
}

impl Iterator for Matches<'_, '_, '_> {
    type Item = Found;

    fn next(&mut self) -> Option<Found> {
        let (src, s, pos) = (self.src, self.s, self.pos);
        self.builtin = self.builtin.refresh(pos, || {
            src.detectors.find(s, pos).map(|h| Found { start: h.start, end: h.end, slot: src.builtin_slot(h.kind) })
        });
        let mut best = match self.builtin {
            Pending::At(f) => Some(f),
            _ => None,
        };
        for (c, pending) in src.custom.iter().zip(self.custom.iter_mut()) {
            *pending = pending.refresh(pos, || c.find(s, pos).map(|(start, end)| Found { start, end, slot: c.slot }));
            if let Pending::At(f) = *pending {
                let better = best.is_none_or(|b| f.start < b.start || (f.start == b.start && f.end > b.end));
                if better {
                    best = Some(f);
                }
            }
        }
        let found = best?;
        self.pos = found.end;
        Some(found)
    }
}
