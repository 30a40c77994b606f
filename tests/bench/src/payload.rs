//! Document bytes for both arms: one random block, stamped with the filing's
//! sequence number and each piece's offset, so every document is distinct (the
//! node's store is content-addressed: equal documents would be stored once)
//! without generating gigabytes of randomness or holding a document in memory.

/// Size of the random block documents are cut from.
const BLOCK: usize = 1 << 20;

/// The source of every benchmark document.
pub struct Payload {
    block: Vec<u8>,
}

impl Payload {
    pub fn new() -> anyhow::Result<Self> {
        let mut block = vec![0u8; BLOCK];
        getrandom::fill(&mut block).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        Ok(Self { block })
    }

    /// `len` bytes of document `seq` starting at `offset`. The first 16 bytes
    /// of every piece carry `seq` and `offset`, which makes documents (and the
    /// pieces within one) differ.
    pub fn piece(&self, seq: u64, offset: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut at = (offset.wrapping_mul(31).wrapping_add(seq) % BLOCK as u64) as usize;
        while out.len() < len {
            let n = (len - out.len()).min(BLOCK - at);
            out.extend_from_slice(&self.block[at..at + n]);
            at = 0;
        }
        let mut stamp = [0u8; 16];
        stamp[..8].copy_from_slice(&seq.to_le_bytes());
        stamp[8..].copy_from_slice(&offset.to_le_bytes());
        let n = out.len().min(16);
        out[..n].copy_from_slice(&stamp[..n]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_differ_and_have_the_asked_length() {
        let payload = Payload::new().unwrap();
        let a = payload.piece(1, 0, 1024);
        let b = payload.piece(2, 0, 1024);
        assert_eq!(a.len(), 1024);
        assert_ne!(a, b);
        assert_eq!(payload.piece(3, 7, 3 * BLOCK + 5).len(), 3 * BLOCK + 5);
        assert_eq!(payload.piece(3, 7, 4).len(), 4);
    }
}
