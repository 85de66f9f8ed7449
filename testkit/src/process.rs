//! Child processes started by a test.

/// A child process killed when dropped, so a failing test leaves nothing
/// running.
#[derive(Debug)]
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
