//! The queries in flight, found by their DNS id without hashing: a table of all 65,536 ids
//! points into a dense slab of entries, and freed entries are reused through a free list, so
//! a query costs no allocation here once the slab has grown to the window's size.
//!
//! Ids are drawn at random (a forger must guess one, as RFC 5452 asks) among those not in
//! flight. A [`Key`] carries a generation, so a timer set for a query that has since been
//! answered cannot reach the query that reuses its entry.

use rand::Rng;

/// The most entries in flight at once: well under the 65,536 ids, so a random draw finds a
/// free id within a few tries.
pub const CAPACITY: usize = 8192;

/// Where an entry lives; stale once the entry is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    index: u32,
    generation: u32,
}

struct Entry<T> {
    id: u16,
    generation: u32,
    value: Option<T>,
}

pub struct InFlight<T> {
    /// By id: the entry's index + 1, or 0 when the id is free.
    by_id: Vec<u32>,
    entries: Vec<Entry<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for InFlight<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> InFlight<T> {
    pub fn new() -> InFlight<T> {
        InFlight {
            by_id: vec![0; 1 << 16],
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes a random free id and stores `value` under it; the id and the key, or the value
    /// back when full.
    pub fn insert(&mut self, rng: &mut impl Rng, value: T) -> Result<(u16, Key), T> {
        if self.len >= CAPACITY {
            return Err(value);
        }
        let id = loop {
            let id: u16 = rng.gen();
            if self.by_id[usize::from(id)] == 0 {
                break id;
            }
        };
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.entries.push(Entry {
                    id,
                    generation: 0,
                    value: None,
                });
                // At most CAPACITY entries: fits in u32.
                (self.entries.len() - 1) as u32
            }
        };
        let entry = &mut self.entries[index as usize];
        entry.id = id;
        entry.value = Some(value);
        self.by_id[usize::from(id)] = index + 1;
        self.len += 1;
        let key = Key {
            index,
            generation: entry.generation,
        };
        Ok((id, key))
    }

    /// The entry in flight under `id`.
    pub fn by_id(&self, id: u16) -> Option<(Key, &T)> {
        let index = self.by_id[usize::from(id)].checked_sub(1)?;
        let entry = self.entries.get(index as usize)?;
        let value = entry.value.as_ref()?;
        let key = Key {
            index,
            generation: entry.generation,
        };
        Some((key, value))
    }

    pub fn get(&self, key: Key) -> Option<&T> {
        let entry = self.entries.get(key.index as usize)?;
        if entry.generation != key.generation {
            return None;
        }
        entry.value.as_ref()
    }

    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        let entry = self.entries.get_mut(key.index as usize)?;
        if entry.generation != key.generation {
            return None;
        }
        entry.value.as_mut()
    }

    /// Removes the entry and frees its id; `None` when the key is stale.
    pub fn remove(&mut self, key: Key) -> Option<T> {
        let entry = self.entries.get_mut(key.index as usize)?;
        if entry.generation != key.generation {
            return None;
        }
        let value = entry.value.take()?;
        entry.generation = entry.generation.wrapping_add(1);
        self.by_id[usize::from(entry.id)] = 0;
        self.free.push(key.index);
        self.len -= 1;
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::collections::HashSet;

    /// Draws the ids given, in order (then zeros).
    struct Ids(Vec<u16>);

    impl rand::RngCore for Ids {
        fn next_u32(&mut self) -> u32 {
            if self.0.is_empty() {
                0
            } else {
                u32::from(self.0.remove(0))
            }
        }
        fn next_u64(&mut self) -> u64 {
            u64::from(self.next_u32())
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            rand::RngCore::try_fill_bytes(self, dest).unwrap_or_default();
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
            for chunk in dest.chunks_mut(2) {
                let b = self.next_u32().to_le_bytes();
                chunk.copy_from_slice(&b[..chunk.len()]);
            }
            Ok(())
        }
    }

    #[test]
    fn entries_are_found_by_id_and_ids_in_flight_are_never_drawn_twice() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut slab = InFlight::new();
        let mut ids = HashSet::new();
        for n in 0..1000 {
            let (id, key) = slab.insert(&mut rng, n).expect("room");
            assert!(ids.insert(id), "id {id} drawn twice");
            assert_eq!(slab.get_mut(key).copied(), Some(n));
            assert_eq!(slab.by_id(id).map(|(k, v)| (k, *v)), Some((key, n)));
        }
        assert_eq!(slab.len(), 1000);
    }

    #[test]
    fn a_drawn_id_already_in_flight_is_drawn_again() {
        let mut slab = InFlight::new();
        let mut rng = Ids(vec![7, 7, 7, 9]);
        let (a, _) = slab.insert(&mut rng, "a").expect("room");
        let (b, _) = slab.insert(&mut rng, "b").expect("room");
        assert_eq!((a, b), (7, 9), "7 was taken: the draw went on");
    }

    #[test]
    fn a_freed_id_and_entry_are_reused_but_a_stale_key_reaches_nothing() {
        let mut slab = InFlight::new();
        let mut rng = Ids(vec![42, 42]);
        let (_, old) = slab.insert(&mut rng, "old").expect("room");
        assert_eq!(slab.remove(old), Some("old"));
        assert!(slab.by_id(42).is_none(), "the id is free once removed");
        assert!(slab.is_empty());
        let (_, new) = slab.insert(&mut rng, "new").expect("room");
        assert_eq!(slab.by_id(42).map(|(k, v)| (k, *v)), Some((new, "new")));
        assert_ne!(old, new, "same entry, another generation");
        assert_eq!(slab.get_mut(old), None, "a stale key reaches nothing");
        assert_eq!(slab.remove(old), None);
        assert_eq!(slab.len(), 1, "a stale remove freed nothing");
        assert_eq!(slab.remove(new), Some("new"));
    }

    #[test]
    fn the_slab_refuses_past_its_capacity() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut slab = InFlight::new();
        let keys: Vec<Key> = (0..CAPACITY)
            .map(|n| slab.insert(&mut rng, n).expect("room").1)
            .collect();
        assert_eq!(
            slab.insert(&mut rng, 0).err(),
            Some(0),
            "full: the value comes back"
        );
        slab.remove(keys[0]);
        assert!(slab.insert(&mut rng, 0).is_ok());
    }
}
