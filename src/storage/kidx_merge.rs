//! Merging key index files into one (the merged key index tiers), written
//! section by section as the merge goes: memory is bounded by the key count
//! (the hash section) and a buffer per section, never by the versions (built
//! in memory, the index took about twice its size in heap: 2.3 GB files are
//! common at 10 GiB of log).
//!
//! The output is byte for byte what [`super::index::encode_key_index`] would
//! encode from the same keys and versions (a test checks it): a first pass over
//! the inputs counts each stream's keys, key bytes and versions, which fixes
//! every section's offset; the second pass writes keys, key bytes and versions
//! through one buffered writer per section, each checksumming its share of
//! the file's 4 KiB chunks, and the chunks' checksums are their shares'
//! combined in file order ([`super::chunks::Sums::join`]).

use std::io::Write;
use std::path::Path;

use bytes::Bytes;

use super::chunks::{self, Chunked, Sums};
use super::fsutil::{self, SeqWriter};
use super::index::{key_entry, HashSection, KeyFileCursor, KeyIndexFile, VersionRef};
use super::kidx_encode::{layout, Sizes};
use super::vfs::Vfs;
use crate::{Error, Result};

/// The key the merge takes next: the smallest current key of any cursor.
fn next_key(cursors: &[KeyFileCursor]) -> Option<Bytes> {
    cursors
        .iter()
        .filter(|c| c.key().is_some())
        .min_by(|a, b| a.key().cmp(&b.key()))
        .map(KeyFileCursor::key_bytes)
}

/// The streams of any of `files`, sorted by name.
fn stream_names(files: &[&KeyIndexFile]) -> Vec<String> {
    let mut names: Vec<String> = files
        .iter()
        .flat_map(|f| f.stream_names().map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Merges `files` (key indexes of consecutive segments or tiers) into a new
/// key index file at `path`, atomically: a temporary file, synced, renamed,
/// and the directory synced.
pub fn write_merged(vfs: &dyn Vfs, path: &Path, files: &[&KeyIndexFile]) -> Result<()> {
    let names = stream_names(files);
    // Each input is checked whole by its first cursor.
    let cursors = |name: &str| -> Result<Vec<KeyFileCursor>> {
        let mut out = Vec::with_capacity(files.len());
        for f in files {
            out.extend(f.bulk_cursor(name)?);
        }
        Ok(out)
    };
    // Both passes read every input once, in order, through bulk cursors:
    // they unmap what they have copied, so merging a large history does not
    // leave it all resident.
    // Pass 1: sizes, which fix the layout.
    let mut sizes = Vec::with_capacity(names.len());
    for name in &names {
        let mut cs = cursors(name)?;
        let mut s = Sizes {
            keys: 0,
            blob: 0,
            versions: 0,
        };
        while let Some(key) = next_key(&cs) {
            s.keys += 1;
            s.blob += key.len();
            for c in &mut cs {
                if c.key() == Some(&key[..]) {
                    s.versions += c.version_count();
                    c.skip();
                }
            }
        }
        s.check(name)?;
        sizes.push(s);
    }
    let named: Vec<(&str, Sizes)> = names
        .iter()
        .map(String::as_str)
        .zip(sizes.iter().copied())
        .collect();
    let (head, layout) = layout(&named);
    let at = layout.last().map_or(head.len() as u64, |o| o[4]);
    let written = fsutil::atomic_write_with(vfs, path, |file, tmp| {
        let io = |e| Error::io(tmp, e);
        let mut head_sums = Chunked::at(Vec::new(), 0);
        head_sums.write_all(&head).map_err(io)?;
        let (head_sums, head) = head_sums.finish();
        let mut sums = vec![head_sums];
        file.write_at(&head, 0).map_err(io)?;
        // Pass 2: every stream's sections.
        let mut vs: Vec<VersionRef> = Vec::new();
        for ((name, offs), size) in names.iter().zip(&layout).zip(&sizes) {
            let [keys_off, blob_off, vers_off, hash_off, end] = *offs;
            let mut cs = cursors(name)?;
            let section = |off: u64| Chunked::at(SeqWriter::new(file, off), off);
            let mut keys = section(keys_off);
            let mut blob = section(blob_off);
            let mut vers = section(vers_off);
            let mut hash = section(hash_off);
            let mut buckets = HashSection::new(size.keys);
            let (mut i, mut blob_at, mut ver_at) = (0usize, 0u32, 0u32);
            while let Some(key) = next_key(&cs) {
                // More keys than the first pass counted would overfill the
                // hash section, sized for those.
                if i == size.keys {
                    return Err(Error::corrupt(
                        tmp,
                        keys_off,
                        format!(
                            "the inputs changed while merging: stream {name} has more than {} keys",
                            size.keys
                        ),
                    ));
                }
                i += 1;
                vs.clear();
                for c in &mut cs {
                    if c.key() == Some(&key[..]) {
                        c.take(&mut vs);
                    }
                }
                vs.sort_unstable_by_key(VersionRef::order);
                keys.write_all(&key_entry(
                    blob_at,
                    key.len() as u32,
                    ver_at,
                    vs.len() as u32,
                ))
                .map_err(io)?;
                blob.write_all(&key).map_err(io)?;
                for v in &vs {
                    vers.write_all(&v.encode()).map_err(io)?;
                }
                buckets.insert(&key, blob_at, ver_at, vs.len() as u32);
                blob_at += key.len() as u32;
                ver_at += vs.len() as u32;
            }
            hash.write_all(buckets.bytes()).map_err(io)?;
            let ends = [blob_off, vers_off, hash_off, end];
            for (section, want_end) in [keys, blob, vers, hash].into_iter().zip(ends) {
                let (section_sums, w) = section.finish();
                let (_, got_end) = w.finish().map_err(io)?;
                if got_end != want_end {
                    return Err(Error::corrupt(
                        tmp,
                        got_end,
                        format!("the inputs changed while merging: a section ends at {got_end}, expected {want_end}"),
                    ));
                }
                sums.push(section_sums);
            }
        }
        let crcs = Sums::join(sums, at)
            .ok_or_else(|| Error::corrupt(tmp, 0, "merged key index sections do not tile it"))?;
        file.write_at(&chunks::trailer(&crcs, at), at).map_err(io)
    });
    for f in files {
        f.release_pages();
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::storage::index::{encode_key_index, StreamKeys};
    use crate::storage::memvfs::MemVfs;
    use crate::storage::record::Op;

    type Keys = Vec<(Vec<u8>, Vec<VersionRef>)>;

    /// The merge as it was done in memory: every key with all its versions,
    /// then one encoding. The streamed file must equal it byte for byte.
    fn in_memory(files: &[&KeyIndexFile]) -> Vec<u8> {
        let names = stream_names(files);
        let mut per_stream: Vec<(&str, Keys)> = Vec::new();
        for name in &names {
            let mut cs: Vec<_> = files
                .iter()
                .filter_map(|f| f.cursor(name).unwrap())
                .collect();
            let mut keys = Vec::new();
            while let Some(key) = next_key(&cs) {
                let mut vs = Vec::new();
                for c in &mut cs {
                    if c.key() == Some(&key[..]) {
                        c.take(&mut vs);
                    }
                }
                vs.sort_unstable_by_key(VersionRef::order);
                keys.push((key.to_vec(), vs));
            }
            per_stream.push((name, keys));
        }
        let streams: Vec<StreamKeys<'_, &Vec<u8>>> = per_stream
            .iter()
            .map(|(n, keys)| (*n, keys.iter().map(|(k, v)| (k, &v[..])).collect()))
            .collect();
        encode_key_index(&streams)
    }

    /// A key index of random keys (some shared with other files) and versions
    /// over up to three streams.
    fn random_file(rng: &mut Rng, first_pos: u64) -> KeyIndexFile {
        let mut pos = first_pos;
        let mut streams: Vec<(String, Keys)> = Vec::new();
        for name in ["a", "bb", "c"] {
            if rng.below(4) == 0 {
                continue;
            }
            let mut keys: Keys = (0..rng.below(40))
                .map(|_| {
                    let len = rng.below(20) as usize;
                    let key: Vec<u8> = (0..len).map(|_| b'a' + rng.below(3) as u8).collect();
                    (key, Vec::new())
                })
                .collect();
            keys.sort_by(|a, b| a.0.cmp(&b.0));
            keys.dedup_by(|a, b| a.0 == b.0);
            for (_, vs) in &mut keys {
                for _ in 0..=rng.below(4) {
                    vs.push(VersionRef {
                        event_time: rng.below(50) as i64 - 25,
                        position: pos,
                        frame_off: rng.below(1 << 20),
                        rec_off: rng.below(1 << 16) as u32,
                        op: [Op::Put, Op::Patch, Op::Delete][rng.below(3) as usize],
                    });
                    pos += 1;
                }
                vs.sort_unstable_by_key(VersionRef::order);
            }
            streams.push((name.to_string(), keys));
        }
        let sk: Vec<StreamKeys<'_, &Vec<u8>>> = streams
            .iter()
            .map(|(n, keys)| (n.as_str(), keys.iter().map(|(k, v)| (k, &v[..])).collect()))
            .collect();
        KeyIndexFile::open(Bytes::from(encode_key_index(&sk)), Path::new("k")).unwrap()
    }

    #[test]
    fn the_streamed_merge_is_byte_for_byte_the_in_memory_one() {
        let vfs = MemVfs::new();
        let dir = Path::new("/m");
        vfs.create_dir_all(dir).unwrap();
        let mut rng = Rng(7);
        for case in 0..300 {
            let n = rng.below(6) as usize;
            let files: Vec<KeyIndexFile> = (0..n)
                .map(|i| random_file(&mut rng, i as u64 * 1000))
                .collect();
            let refs: Vec<&KeyIndexFile> = files.iter().collect();
            let path = dir.join(format!("index-{case}.kidx"));
            write_merged(&vfs, &path, &refs).unwrap();
            let got = vfs.read(&path).unwrap();
            assert_eq!(&got[..], &in_memory(&refs)[..], "case {case}");
            KeyIndexFile::open(got, &path).unwrap();
            assert!(vfs.read(&path.with_extension("kidx.tmp")).is_err());
        }
    }

    #[test]
    fn sections_larger_than_the_buffer_are_written_whole() {
        // One stream, 40k keys of 40 bytes, 3 versions each: every section
        // but the hash flushes its buffer several times.
        let mut keys: Keys = (0..40_000u32)
            .map(|i| {
                let key = format!("{i:040}").into_bytes();
                let vs = (0..3u32)
                    .map(|j| VersionRef {
                        event_time: i64::from(j),
                        position: u64::from(i) * 3 + u64::from(j),
                        frame_off: 0,
                        rec_off: 0,
                        op: Op::Put,
                    })
                    .collect();
                (key, vs)
            })
            .collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        let half = keys.split_off(20_000);
        let file = |keys: &Keys| {
            let sk: Vec<StreamKeys<'_, &Vec<u8>>> =
                vec![("s", keys.iter().map(|(k, v)| (k, &v[..])).collect())];
            KeyIndexFile::open(Bytes::from(encode_key_index(&sk)), Path::new("k")).unwrap()
        };
        let (a, b) = (file(&keys), file(&half));
        let vfs = MemVfs::new();
        vfs.create_dir_all(Path::new("/m")).unwrap();
        let path = Path::new("/m/index.kidx");
        write_merged(&vfs, path, &[&a, &b]).unwrap();
        assert_eq!(&vfs.read(path).unwrap()[..], &in_memory(&[&a, &b])[..]);
    }
}
