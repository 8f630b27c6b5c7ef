//! Metadata of touched codes, indexed by slot: what a campaign keeps beyond
//! a code's state bits (recipient, redemption, hold, last LSN).
//!
//! Laid out like the [`StateMap`](crate::state::StateMap) it sits beside:
//! one directory per state-map chunk, allocated when a code of the chunk is
//! first touched, holding one pointer per page of [`PAGE_CODES`] codes. A
//! page is allocated when one of its codes is first touched and keeps only
//! the touched codes' metadata, packed in slot order behind a bitmap, so
//! memory follows the touched codes (dense or sparse) and a lookup is two
//! loads and an index, with no hashing and no table that grows by copying.
//!
//! Each page has its own lock. The code's busy bit orders transitions; the
//! page lock only keeps readers that do not hold the busy bit (status,
//! exports, snapshots) from seeing a cell while it is written, and the
//! page's packing consistent while neighbours are inserted.

use std::collections::VecDeque;

use crate::state::{CHUNKS_MAX, chunk_codes, chunk_of};
use crate::sync::{AtomicPtr, Mutex, Ordering};

/// Codes a page covers: one bit each in its bitmap. One under loom, so
/// that codes of a model never share a page lock.
pub(crate) const PAGE_CODES: u64 = if cfg!(loom) { 1 } else { 64 };
const _: () = assert!(PAGE_CODES.is_power_of_two() && PAGE_CODES <= 64);

/// The touched codes of one page: bit `i` of `present` is set when code
/// `i` of the page has metadata, which is then
/// `cells[popcount(present below bit i)]`. A ring buffer rather than a
/// vector: a new cell moves the shorter side of the page over, so codes
/// touched in ascending or descending order insert without moving any
/// (a vector moved every cell after the new one: the whole page when codes
/// were redeemed from the top of a campaign down).
struct Page<T> {
    present: u64,
    cells: VecDeque<T>,
}

impl<T> Page<T> {
    fn position(&self, bit: u32) -> usize {
        (self.present & ((1u64 << bit) - 1)).count_ones() as usize
    }

    fn get(&self, bit: u32) -> Option<&T> {
        (self.present & (1 << bit) != 0).then(|| &self.cells[self.position(bit)])
    }
}

/// One state-map chunk's pages; a null pointer is a page nobody touched.
struct Directory<T> {
    pages: Box<[AtomicPtr<Mutex<Page<T>>>]>,
}

/// Metadata by slot index, for one state map.
pub(crate) struct MetaMap<T> {
    /// Per state-map chunk; null until a code of the chunk is touched. Set
    /// once, freed only in `Drop`.
    directories: Box<[AtomicPtr<Directory<T>>]>,
}

impl<T> Default for MetaMap<T> {
    fn default() -> Self {
        MetaMap {
            directories: (0..CHUNKS_MAX)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
        }
    }
}

impl<T> std::fmt::Debug for MetaMap<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaMap").finish_non_exhaustive()
    }
}

/// Installs `make()` in a null `slot`, or returns what another thread
/// installed first; never replaces a non-null pointer.
fn install<P>(slot: &AtomicPtr<P>, make: impl FnOnce() -> P) -> &P {
    // Acquire pairs with the Release of the installing CAS below.
    let mut ptr = slot.load(Ordering::Acquire);
    if ptr.is_null() {
        let fresh = Box::into_raw(Box::new(make()));
        // Release: the initialised value is visible to whoever loads the
        // pointer; Acquire on failure: so is the winner's.
        match slot.compare_exchange(
            std::ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => ptr = fresh,
            Err(winner) => {
                // SAFETY: `fresh` came from `Box::into_raw` above and was
                // never shared.
                drop(unsafe { Box::from_raw(fresh) });
                ptr = winner;
            }
        }
    }
    // SAFETY: non-null pointers here come from `Box::into_raw`, are never
    // replaced, and are freed only in `Drop`, which cannot run while the
    // map is borrowed.
    unsafe { &*ptr }
}

/// The value behind a pointer `install` may have set, if it did.
fn installed<P>(slot: &AtomicPtr<P>) -> Option<&P> {
    // Acquire pairs with the Release of `install`.
    let ptr = slot.load(Ordering::Acquire);
    // SAFETY: as in `install`.
    (!ptr.is_null()).then(|| unsafe { &*ptr })
}

/// Where a slot index lives: its chunk, the page in the chunk, the bit in
/// the page.
fn place(index: u64) -> (usize, usize, u32) {
    let (chunk, offset) = chunk_of(index);
    (
        chunk,
        (offset / PAGE_CODES) as usize,
        (offset % PAGE_CODES) as u32,
    )
}

impl<T> MetaMap<T> {
    fn page(&self, index: u64) -> Option<(&Mutex<Page<T>>, u32)> {
        let (chunk, page, bit) = place(index);
        let directory = installed(&self.directories[chunk])?;
        Some((installed(&directory.pages[page])?, bit))
    }

    fn page_or_new(&self, index: u64) -> (&Mutex<Page<T>>, u32) {
        let (chunk, page, bit) = place(index);
        let directory = install(&self.directories[chunk], || Directory {
            pages: (0..chunk_codes(chunk) / PAGE_CODES)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
        });
        let page = install(&directory.pages[page], || {
            Mutex::new(Page {
                present: 0,
                cells: VecDeque::new(),
            })
        });
        (page, bit)
    }

    /// A copy of the code's metadata, if it has any.
    pub(crate) fn get(&self, index: u64) -> Option<T>
    where
        T: Clone,
    {
        let (page, bit) = self.page(index)?;
        page.lock().get(bit).cloned()
    }

    /// Applies `f` to the code's metadata, creating it (default) first.
    pub(crate) fn update<R>(&self, index: u64, f: impl FnOnce(&mut T) -> R) -> R
    where
        T: Default,
    {
        let (page, bit) = self.page_or_new(index);
        let mut page = page.lock();
        let position = page.position(bit);
        if page.present & (1 << bit) == 0 {
            page.present |= 1 << bit;
            page.cells.insert(position, T::default());
        }
        f(&mut page.cells[position])
    }

    /// Forgets the code's metadata.
    pub(crate) fn remove(&self, index: u64) {
        let Some((page, bit)) = self.page(index) else {
            return;
        };
        let mut page = page.lock();
        if page.present & (1 << bit) != 0 {
            let position = page.position(bit);
            page.present &= !(1 << bit);
            page.cells.remove(position);
        }
    }

    /// Visits every code with metadata in index order, each page under its
    /// lock.
    pub(crate) fn for_each(&self, mut f: impl FnMut(u64, &T)) {
        let mut first = 0;
        for (chunk, directory) in self.directories.iter().enumerate() {
            let codes = chunk_codes(chunk);
            if let Some(directory) = installed(directory) {
                for (p, page) in directory.pages.iter().enumerate() {
                    let Some(page) = installed(page) else {
                        continue;
                    };
                    let page = page.lock();
                    let mut cells = page.cells.iter();
                    for bit in 0..PAGE_CODES as u32 {
                        if page.present & (1 << bit) != 0 {
                            let cell = cells.next().expect("a cell per present bit");
                            f(first + p as u64 * PAGE_CODES + u64::from(bit), cell);
                        }
                    }
                }
            }
            first += codes;
        }
    }
}

impl<T> Drop for MetaMap<T> {
    fn drop(&mut self) {
        for directory in self.directories.iter() {
            // Relaxed: `&mut self` means no other thread can touch the map.
            let ptr = directory.load(Ordering::Relaxed);
            if ptr.is_null() {
                continue;
            }
            // SAFETY: from `Box::into_raw` in `install`, freed once here.
            let directory = unsafe { Box::from_raw(ptr) };
            for page in directory.pages.iter() {
                let ptr = page.load(Ordering::Relaxed);
                if !ptr.is_null() {
                    // SAFETY: as above.
                    drop(unsafe { Box::from_raw(ptr) });
                }
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn keeps_touched_codes_in_index_order_across_pages_and_chunks() {
        let map = MetaMap::<u64>::default();
        // Out of order, in two pages of the first chunk and in later chunks.
        let indexes = [70, 3, 64, 0, 63, 4095, 4096, 1 << 20, 5, (1 << 21) - 1];
        for &i in &indexes {
            map.update(i, |v| *v = i + 1);
        }
        map.remove(64);
        map.remove(65); // never touched
        map.remove(1 << 22); // its chunk was never touched
        let mut seen = Vec::new();
        map.for_each(|i, v| seen.push((i, *v)));
        let mut expected: Vec<(u64, u64)> = indexes
            .iter()
            .filter(|&&i| i != 64)
            .map(|&i| (i, i + 1))
            .collect();
        expected.sort_unstable();
        assert_eq!(seen, expected);
        assert_eq!(map.get(63), Some(64));
        assert_eq!(map.get(64), None);
        assert_eq!(map.get(65), None);
        assert_eq!(map.get(1 << 22), None);
        assert_eq!(map.update(3, |v| std::mem::replace(v, 9)), 4);
        assert_eq!(map.get(3), Some(9));
    }
}
