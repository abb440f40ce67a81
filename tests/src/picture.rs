//! Drawing a shutdown report found by a harness (the QEMU guest's console,
//! the Redox boot's console) with shutdownd's own renderer
//! ([`shutdownd::svg`]), so every run can be looked at the same way.

use std::path::Path;

/// Reads the report out of `value` (shutdownd's JSON report, possibly with
/// a harness's extra keys) and writes its timeline picture to `path`.
pub fn write_svg(value: &serde_json::Value, path: &Path) -> Result<(), String> {
    let report: shutdownd::Report = serde_json::from_value(value.clone())
        .map_err(|e| format!("the report cannot be drawn: {e}"))?;
    let svg = shutdownd::svg::render(&report, &shutdownd::svg::SvgOptions::default());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, svg).map_err(|e| format!("write {}: {e}", path.display()))
}
