//! The demo's static files: `www` at `/`, the wasm bundle at `/pkg`.

use std::fs;

use reqwest::StatusCode;

use crate::helpers::spawn_app_with;

#[tokio::test]
async fn www_and_pkg_are_served_with_the_right_types() {
    let root = std::env::temp_dir().join(format!("ferry-static-{}", uuid::Uuid::new_v4().simple()));
    let (www, pkg) = (root.join("www"), root.join("pkg"));
    fs::create_dir_all(&www).unwrap();
    fs::create_dir_all(&pkg).unwrap();
    fs::write(www.join("index.html"), "<!doctype html><title>demo</title>").unwrap();
    fs::write(pkg.join("ferry_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
    fs::write(pkg.join("ferry.js"), "export default 1;").unwrap();

    let app = spawn_app_with(|s| {
        s.www_dir = Some(www.clone());
        s.pkg_dir = Some(pkg.clone());
    })
    .await;

    // (path, content type, body start)
    let cases = [
        ("/", "text/html", "<!doctype html>"),
        ("/index.html", "text/html", "<!doctype html>"),
        ("/pkg/ferry_bg.wasm", "application/wasm", "\0asm"),
        ("/pkg/ferry.js", "text/javascript", "export"),
    ];
    for (path, content_type, start) in cases {
        let response = app.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let got = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(got.starts_with(content_type), "{path}: {got}");
        let body = response.bytes().await.unwrap();
        assert!(body.starts_with(start.as_bytes()), "{path}");
    }
    // The API still wins over files of the same name.
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    let _ignored = fs::remove_dir_all(&root);
}
