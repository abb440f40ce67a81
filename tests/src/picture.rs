//! Drawing a shutdown report found by a harness (the QEMU guest's console,
//! the Redox boot's console) with shutdownd's own renderer
//! ([`shutdownd::svg`]), so every run can be looked at the same way.

use std::path::Path;

/// Writes the timeline picture of `report` to `path`.
pub fn write_svg(report: &shutdownd::Report, path: &Path) -> Result<(), String> {
    let svg = shutdownd::svg::render(report, &shutdownd::svg::SvgOptions::default());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, svg).map_err(|e| format!("write {}: {e}", path.display()))
}
