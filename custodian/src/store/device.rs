//! The sealing device the stored shards belong to.

use rusqlite::{params, OptionalExtension};

use super::{now, Store, StoreError};

impl Store {
    /// The device id this database's shards were sealed with, once bound.
    pub fn bound_device(&self) -> Result<Option<[u8; 16]>, StoreError> {
        self.with_reader(|c| {
            let id: Option<Vec<u8>> = c
                .query_row("SELECT device_id FROM device WHERE one = 1", [], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(id.and_then(|v| <[u8; 16]>::try_from(v.as_slice()).ok()))
        })
    }

    /// The device ids named in the headers of the stored blobs (for binding a database
    /// written before devices were recorded). A blob whose header does not decode is
    /// reported as the all-zero id, which matches no device.
    pub fn stored_device_ids(&self) -> Result<std::collections::BTreeSet<[u8; 16]>, StoreError> {
        self.with_reader(|c| {
            let mut ids = std::collections::BTreeSet::new();
            let mut stmt = c.prepare("SELECT substr(blob, 1, ?1) FROM shards")?;
            let mut rows = stmt.query(params![hsm::blob::HEADER_LEN as i64])?;
            while let Some(row) = rows.next()? {
                let head: Vec<u8> = row.get(0)?;
                let id = hsm::BlobHeader::decode(&head)
                    .map(|(h, _)| h.device_id)
                    .unwrap_or([0; 16]);
                ids.insert(id);
            }
            Ok(ids)
        })
    }

    /// Records `device_id` as the device this database's shards belong to (replacing
    /// an earlier one: the caller decides when that is allowed).
    pub fn bind_device(&self, device_id: &[u8; 16]) -> Result<(), StoreError> {
        let w = self.writer();
        w.conn.execute(
            "INSERT INTO device (one, device_id, bound_at) VALUES (1, ?1, ?2)
             ON CONFLICT (one) DO UPDATE SET device_id = excluded.device_id, bound_at = excluded.bound_at",
            params![device_id.as_slice(), now()],
        )?;
        Ok(())
    }
}
