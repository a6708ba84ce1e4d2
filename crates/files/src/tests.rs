use super::*;

use std::sync::mpsc;
use std::time::Duration;

#[cfg(unix)]
use safeformers_testkit::make_fifo;

fn temp_dir(name: &str) -> PathBuf {
    safeformers_testkit::scratch_dir(&format!("files-{name}"))
}

/// Runs `work` on another thread and fails the test if it has not returned after 20 s: a reader
/// that blocks on a FIFO would otherwise hang the whole suite instead of failing it.
fn within_deadline<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(work());
    });
    receiver
        .recv_timeout(Duration::from_secs(20))
        .expect("the read blocked (a FIFO must be refused without waiting for a writer)")
}

#[cfg(unix)]
#[test]
fn a_fifo_is_refused_without_blocking() {
    let dir = temp_dir("fifo");
    let fifo = dir.join("config.json");
    make_fifo(&fifo);
    let link = dir.join("link.json");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    for path in [fifo, link] {
        let error = within_deadline(move || read_capped(&path, caps::REF)).unwrap_err();
        assert!(
            matches!(
                error,
                FileError::NotRegular {
                    kind: FileKind::Fifo,
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("named pipe"), "{error}");
    }
}

#[cfg(unix)]
#[test]
fn devices_and_directories_are_refused() {
    let dir = temp_dir("devices");
    let zero = dir.join("refs-main");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let error = within_deadline(move || read_capped(&zero, caps::LOCKFILE)).unwrap_err();
    assert!(
        matches!(
            error,
            FileError::NotRegular {
                kind: FileKind::CharDevice,
                ..
            }
        ),
        "{error}"
    );
    let error = open_regular(&dir).unwrap_err();
    assert!(
        matches!(
            error,
            FileError::NotRegular {
                kind: FileKind::Directory,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn reads_stop_at_the_cap_and_name_it() {
    let dir = temp_dir("cap");
    let path = dir.join("main");
    std::fs::write(&path, vec![b'a'; 257]).unwrap();
    let error = read_capped(&path, caps::REF).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("256-byte cap for a ref file"), "{message}");
    assert!(message.contains("main"), "{message}");
    std::fs::write(&path, vec![b'a'; 256]).unwrap();
    assert_eq!(read_capped(&path, caps::REF).unwrap().len(), 256);
}

#[cfg(target_os = "linux")]
#[test]
fn a_file_that_claims_no_size_is_still_capped() {
    // `/proc` files report a size of 0 and then produce bytes: the cap holds on what is read.
    let error =
        read_capped(Path::new("/proc/self/maps"), ReadCap::new("a tiny file", 8)).unwrap_err();
    assert!(
        matches!(error, FileError::TooLarge { size: None, .. }),
        "{error}"
    );
}

#[test]
fn missing_files_are_not_found() {
    let dir = temp_dir("missing");
    let path = dir.join("absent");
    assert!(read_capped(&path, caps::REF).unwrap_err().is_not_found());
    assert!(read_capped_if_exists(&path, caps::REF).unwrap().is_none());
    assert!(
        read_capped_string_if_exists(&path, caps::REF)
            .unwrap()
            .is_none()
    );
}

#[test]
fn text_must_be_utf8() {
    let dir = temp_dir("utf8");
    let path = dir.join("ref");
    std::fs::write(&path, b"ab\xffcd").unwrap();
    let error = read_capped_string(&path, caps::REF).unwrap_err();
    assert!(
        matches!(error, FileError::NotUtf8 { offset: 2, .. }),
        "{error}"
    );
}

#[cfg(unix)]
#[test]
fn links_are_followed_only_within_the_root() {
    let dir = temp_dir("within");
    let root = dir.join("repo");
    std::fs::create_dir_all(root.join("blobs")).unwrap();
    std::fs::write(root.join("blobs/abc"), b"x").unwrap();
    std::fs::write(dir.join("outside"), b"secret").unwrap();
    let inside = root.join("inside");
    std::os::unix::fs::symlink("blobs/abc", &inside).unwrap();
    let escape = root.join("escape");
    std::os::unix::fs::symlink("../outside", &escape).unwrap();
    let resolved = resolve_within(&inside, &root).unwrap();
    assert!(resolved.ends_with("blobs/abc"));
    let error = resolve_within(&escape, &root).unwrap_err();
    assert!(matches!(error, FileError::OutsideRoot { .. }), "{error}");
    assert!(error.to_string().contains("outside"), "{error}");
}

#[cfg(unix)]
#[test]
fn links_leaving_a_folder_are_found_at_any_depth() {
    let dir = temp_dir("leaving");
    let model = dir.join("model");
    std::fs::create_dir_all(model.join("1_Pooling")).unwrap();
    std::fs::write(model.join("config.json"), b"{}").unwrap();
    std::os::unix::fs::symlink("config.json", model.join("inside.json")).unwrap();
    std::os::unix::fs::symlink("../gone", model.join("dangling")).unwrap();
    let roots = [model.clone()];
    links_leaving(&model, &roots).unwrap();
    std::fs::write(dir.join("secret"), b"x").unwrap();
    std::os::unix::fs::symlink("../../secret", model.join("1_Pooling/config.json")).unwrap();
    let error = links_leaving(&model, &roots).unwrap_err();
    assert!(matches!(error, FileError::OutsideRoot { .. }), "{error}");
    assert!(error.to_string().contains("1_Pooling"), "{error}");
    // Another allowed root (a cache snapshot's blobs/) admits it.
    links_leaving(&model, &[model.clone(), dir.clone()]).unwrap();
}
