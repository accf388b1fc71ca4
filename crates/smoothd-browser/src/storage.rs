//! Browser state on disk: packing a profile folder into an archive (without caches, which
//! are large and rebuildable) and unpacking it, and unpacking uploaded extensions (.zip, or
//! .crx: a header followed by a zip).

use std::io::{Cursor, Read};
use std::path::Path;

/// Folders inside a Chromium profile that are caches: not worth saving.
const SKIP: [&str; 8] = [
    "Cache",
    "Code Cache",
    "GPUCache",
    "GrShaderCache",
    "ShaderCache",
    "GraphiteDawnCache",
    "component_crx_cache",
    "Crashpad",
];

/// Packs `dir` into a tar archive.
pub fn pack_profile(dir: &Path) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    add_dir(&mut builder, dir, Path::new(""))?;
    builder.into_inner()
}

fn add_dir(b: &mut tar::Builder<Vec<u8>>, root: &Path, rel: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        // Lock files and sockets belong to the process that ran, not to the profile.
        if SKIP.contains(&name_str.as_ref()) || name_str.starts_with("Singleton") || name_str == "lockfile" {
            continue;
        }
        let path = rel.join(&name);
        let ft = entry.file_type()?;
        if ft.is_dir() {
            b.append_dir(&path, root.join(&path))?;
            add_dir(b, root, &path)?;
        } else if ft.is_file() {
            b.append_path_with_name(root.join(&path), &path)?;
        }
    }
    Ok(())
}

/// Unpacks a profile archive into `dir`.
pub fn unpack_profile(archive: &[u8], dir: &Path) -> std::io::Result<()> {
    let mut a = tar::Archive::new(Cursor::new(archive));
    a.set_overwrite(true);
    a.unpack(dir)
}

/// Unpacks a Chrome extension (.zip or .crx) into `dir` and returns the folder holding its
/// manifest.json: `dir` itself, or the one folder the archive wraps everything in.
pub fn unpack_extension(bytes: &[u8], dir: &Path) -> Result<std::path::PathBuf, String> {
    let zip_bytes = if bytes.starts_with(b"Cr24") {
        // CRX3: "Cr24", version (u32 LE), header length (u32 LE), header, then the zip.
        let header_len = bytes
            .get(8..12)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        match header_len {
            Some(n) if bytes.len() > 12 + n => &bytes[12 + n..],
            _ => return Err("the .crx header is truncated".into()),
        }
    } else {
        bytes
    };
    let mut archive =
        zip::ZipArchive::new(Cursor::new(zip_bytes)).map_err(|e| format!("not a valid zip: {e}"))?;
    for i in 0..archive.len() {
        let mut file = archive
            .by_index(i)
            .map_err(|e| format!("corrupt zip entry: {e}"))?;
        let Some(rel) = file.enclosed_name() else {
            return Err(format!("unsafe path in archive: {}", file.name()));
        };
        let out = dir.join(rel);
        if file.is_dir() {
            std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
            continue;
        }
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)
            .map_err(|e| format!("cannot read {}: {e}", file.name()))?;
        std::fs::write(&out, buf).map_err(|e| e.to_string())?;
    }
    if dir.join("manifest.json").is_file() {
        return Ok(dir.to_path_buf());
    }
    // Archives often wrap everything in one folder; Chromium wants the manifest's folder.
    let subdirs: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    match subdirs.as_slice() {
        [only] if only.join("manifest.json").is_file() => Ok(only.clone()),
        _ => Err("the extension has no manifest.json (at its top level or in its one folder)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_round_trip_skips_caches() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("Default/Local Storage")).unwrap();
        std::fs::write(src.path().join("Default/Cookies"), b"cookie-db").unwrap();
        std::fs::write(src.path().join("Default/Local Storage/x.ldb"), b"ls").unwrap();
        std::fs::create_dir_all(src.path().join("Default/Cache")).unwrap();
        std::fs::write(src.path().join("Default/Cache/big"), vec![0u8; 1000]).unwrap();
        std::fs::write(src.path().join("SingletonLock"), b"x").unwrap();
        let archive = pack_profile(src.path()).unwrap();
        let dst = tempfile::tempdir().unwrap();
        unpack_profile(&archive, dst.path()).unwrap();
        assert_eq!(
            std::fs::read(dst.path().join("Default/Cookies")).unwrap(),
            b"cookie-db"
        );
        assert_eq!(
            std::fs::read(dst.path().join("Default/Local Storage/x.ldb")).unwrap(),
            b"ls"
        );
        assert!(!dst.path().join("Default/Cache").exists());
        assert!(!dst.path().join("SingletonLock").exists());
    }

    #[test]
    fn extension_zip_and_crx() {
        use std::io::Write;
        let mut buf = Cursor::new(Vec::new());
        {
            let mut z = zip::ZipWriter::new(&mut buf);
            z.start_file("manifest.json", zip::write::SimpleFileOptions::default())
                .unwrap();
            z.write_all(br#"{"manifest_version": 3, "name": "t", "version": "1"}"#)
                .unwrap();
            z.finish().unwrap();
        }
        let zip = buf.into_inner();
        let d = tempfile::tempdir().unwrap();
        assert_eq!(unpack_extension(&zip, d.path()).unwrap(), d.path());
        assert!(d.path().join("manifest.json").is_file());
        // One wrapping folder is fine.
        let mut wrapped = Cursor::new(Vec::new());
        {
            let mut z = zip::ZipWriter::new(&mut wrapped);
            z.start_file("myext/manifest.json", zip::write::SimpleFileOptions::default())
                .unwrap();
            z.write_all(br#"{"manifest_version": 3, "name": "t", "version": "1"}"#)
                .unwrap();
            z.finish().unwrap();
        }
        let w = tempfile::tempdir().unwrap();
        assert_eq!(
            unpack_extension(&wrapped.into_inner(), w.path()).unwrap(),
            w.path().join("myext")
        );
        let mut crx = b"Cr24".to_vec();
        crx.extend_from_slice(&3u32.to_le_bytes());
        crx.extend_from_slice(&4u32.to_le_bytes());
        crx.extend_from_slice(b"hdr!");
        crx.extend_from_slice(&zip);
        let d2 = tempfile::tempdir().unwrap();
        unpack_extension(&crx, d2.path()).unwrap();
        assert!(d2.path().join("manifest.json").is_file());
        assert!(unpack_extension(b"PK\x03\x04junk", tempfile::tempdir().unwrap().path()).is_err());
    }
}
