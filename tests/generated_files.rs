//! Files derived from the code must equal what the code renders now: the
//! SQL migrations rendered from the matrix and the table layouts, and the
//! matrix table embedded in the data-plane document and the README.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use applianced::control::{ddl, grants};
use applianced::tools::matrix_docs;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn rendered_migrations_are_current() {
    for (path, rendered) in [
        ("sql/0003_event_tables.sql", ddl::render_event_tables_sql()),
        ("sql/0004_core_views.sql", ddl::render_core_views_sql()),
        ("sql/0005_ownership_matrix.sql", grants::render_sql()),
    ] {
        assert!(read(path) == rendered, "{path} differs from the code; run `applianced generate-sql --dir sql`");
    }
}

fn matrix_region(text: &str) -> Option<&str> {
    let begin = "<!-- matrix:begin -->\n";
    let start = text.find(begin)? + begin.len();
    let end = text[start..].find("<!-- matrix:end -->")? + start;
    Some(&text[start..end])
}

#[test]
fn documents_show_the_matrix_exactly() {
    let expected = matrix_docs::render_markdown("default");
    for path in ["hardening/DATA-PLANE.md", "README.md"] {
        let text = read(path);
        let region = matrix_region(&text).unwrap_or_else(|| panic!("{path} lacks the matrix markers"));
        assert!(
            region == expected,
            "{path}: matrix table differs from `applianced matrix --format markdown`:\n{region}\nvs\n{expected}"
        );
    }
}

#[test]
fn data_plane_document_ends_with_the_closing_line() {
    let text = read("hardening/DATA-PLANE.md");
    assert_eq!(text.trim_end().lines().last(), Some("Data-plane hardened. Ready to proceed to Phase B."));
}

#[test]
fn matrix_json_lists_the_four_modules() {
    let value = matrix_docs::render_json("default");
    let modules = value["modules"].as_array().unwrap();
    let names: Vec<&str> = modules.iter().map(|m| m["module"].as_str().unwrap()).collect();
    assert_eq!(names, ["core", "dpi", "linux_agent", "windows_agent"]);
    for module in modules {
        assert!(module["pg_role"].as_str().unwrap().starts_with("ransomeye_"));
        assert!(module["socket"].as_str().unwrap().starts_with("@ransomeye/default/"));
        assert!(!module["write_tables"].as_array().unwrap().is_empty());
    }
    assert_eq!(modules[0]["reader_role"], "ransomeye_core_reader");
    for agent in &modules[1..] {
        assert!(agent["read_objects"].as_array().unwrap().is_empty());
    }
}
