//! The choice among replicas, with fake clients (each a replica's name)
//! and scripted answers, under paused time.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tonic::{Code, Response, Status};

use super::{BACKOFF_MAX, BACKOFF_MIN, Trackers};

/// Replicas "a", "b", "c" whose answers the test sets: up answers with its
/// name, down answers `Code::Unavailable`, anything else is that refusal.
#[derive(Clone, Default)]
struct Script {
    answers: Arc<Mutex<HashMap<&'static str, Code>>>,
    asked: Arc<Mutex<Vec<&'static str>>>,
}

impl Script {
    fn set(&self, replica: &'static str, code: Code) {
        self.answers.lock().unwrap().insert(replica, code);
    }

    /// Which replicas were asked since the last look.
    fn asked(&self) -> Vec<&'static str> {
        std::mem::take(&mut self.asked.lock().unwrap())
    }

    async fn call(&self, trackers: &Trackers<&'static str>) -> Result<&'static str, Status> {
        trackers
            .call(|replica| {
                self.asked.lock().unwrap().push(replica);
                let code = self.answers.lock().unwrap().get(replica).copied();
                async move {
                    match code.unwrap_or(Code::Ok) {
                        Code::Ok => Ok(Response::new(replica)),
                        code => Err(Status::new(code, format!("{replica} says no"))),
                    }
                }
            })
            .await
    }
}

fn three() -> Trackers<&'static str> {
    let replicas = ["a", "b", "c"].map(|r| (format!("http://{r}:1"), r));
    Trackers::new(replicas.into()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_first_replica_is_asked_first_and_kept() {
    let (trackers, script) = (three(), Script::default());
    assert_eq!(trackers.current(), "http://a:1");
    assert_eq!(script.call(&trackers).await.unwrap(), "a");
    assert_eq!(script.call(&trackers).await.unwrap(), "a");
    assert_eq!(script.asked(), ["a", "a"]);
}

#[tokio::test(start_paused = true)]
async fn a_silent_replica_is_failed_over_in_order_and_the_next_kept() {
    let (trackers, script) = (three(), Script::default());
    script.set("a", Code::Unavailable);
    assert_eq!(script.call(&trackers).await.unwrap(), "b");
    assert_eq!(trackers.current(), "http://b:1");
    // Sticky: "a" back, the peer stays on "b".
    script.set("a", Code::Ok);
    tokio::time::advance(BACKOFF_MAX * 2).await;
    assert_eq!(script.call(&trackers).await.unwrap(), "b");
    assert_eq!(script.asked(), ["a", "b", "b"]);
    // Each code that means no answer fails over.
    for code in [Code::DeadlineExceeded, Code::Cancelled, Code::Unknown] {
        let (trackers, script) = (three(), Script::default());
        script.set("a", code);
        assert_eq!(script.call(&trackers).await.unwrap(), "b", "{code:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_refusal_is_an_answer_not_a_failover() {
    let (trackers, script) = (three(), Script::default());
    for code in [
        Code::NotFound,
        Code::InvalidArgument,
        Code::ResourceExhausted,
    ] {
        script.set("a", code);
        let e = script.call(&trackers).await.unwrap_err();
        assert_eq!(e.code(), code);
    }
    assert_eq!(script.asked(), ["a", "a", "a"]);
    assert_eq!(trackers.current(), "http://a:1");
}

#[tokio::test(start_paused = true)]
async fn a_resting_replica_is_asked_after_the_others() {
    let (trackers, script) = (three(), Script::default());
    // "a" and "b" fail once; "c" takes over.
    script.set("a", Code::Unavailable);
    script.set("b", Code::Unavailable);
    assert_eq!(script.call(&trackers).await.unwrap(), "c");
    // "b" recovers and rests its BACKOFF_MIN out; "a" fails again (rest
    // doubled).
    script.set("b", Code::Ok);
    tokio::time::advance(BACKOFF_MIN).await;
    script.asked();
    script.set("c", Code::Unavailable);
    // Both "a" and "b" have rested their 1 s: the ring order from "c".
    assert_eq!(script.call(&trackers).await.unwrap(), "b");
    assert_eq!(script.asked(), ["c", "a", "b"]);
    // Now "a" rests 2 s (its second failure), "c" 1 s. "b" fails: "c" and
    // "a" both rest, asked in ring order after any ready one.
    script.set("b", Code::Unavailable);
    script.set("c", Code::Ok);
    assert_eq!(script.call(&trackers).await.unwrap(), "c");
    assert_eq!(script.asked(), ["b", "c"]);
    // "c" fails; after 1 s "b" is ready again (its rest was 1 s) while "a"
    // still rests (2 s): "b" is asked before "a" though "a" comes first
    // in the ring after "c".
    script.set("c", Code::Unavailable);
    script.set("b", Code::Ok);
    tokio::time::advance(BACKOFF_MIN).await;
    assert_eq!(script.call(&trackers).await.unwrap(), "b");
    assert_eq!(script.asked(), ["c", "b"]);
}

#[tokio::test(start_paused = true)]
async fn the_rest_doubles_up_to_its_cap_and_an_answer_ends_it() {
    let script = Script::default();
    let trackers =
        Trackers::new(vec![("http://a:1".into(), "a"), ("http://b:1".into(), "b")]).unwrap();
    script.set("a", Code::Unavailable);
    let mut rest = BACKOFF_MIN;
    for _ in 0..8 {
        // "a" fails each time it is asked first; "b" answers.
        trackers.rotation().current = 0;
        assert_eq!(script.call(&trackers).await.unwrap(), "b");
        let r = trackers.rotation().resting[0].expect("a rests");
        assert_eq!(r.backoff, rest);
        tokio::time::advance(rest).await;
        rest = (rest * 2).min(BACKOFF_MAX);
    }
    assert_eq!(rest, BACKOFF_MAX);
    script.set("a", Code::Ok);
    trackers.rotation().current = 0;
    assert_eq!(script.call(&trackers).await.unwrap(), "a");
    assert!(trackers.rotation().resting[0].is_none());
}

#[tokio::test(start_paused = true)]
async fn every_replica_silent_is_unavailable_naming_each_and_the_flag() {
    let (trackers, script) = (three(), Script::default());
    for r in ["a", "b", "c"] {
        script.set(r, Code::Unavailable);
    }
    let e = script.call(&trackers).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    for part in ["http://a:1", "http://b:1", "http://c:1", "--tracker"] {
        assert!(e.message().contains(part), "{part}: {}", e.message());
    }
    // All resting: the next call still asks every one, none skipped.
    script.asked();
    assert!(script.call(&trackers).await.is_err());
    assert_eq!(script.asked(), ["a", "b", "c"]);
    // One back: it answers at once, with no wait for its rest to end.
    script.set("c", Code::Ok);
    assert_eq!(script.call(&trackers).await.unwrap(), "c");
}

#[test]
fn no_replica_is_refused_naming_the_flag() {
    let e = Trackers::<&str>::new(Vec::new()).err().unwrap();
    assert!(e.to_string().contains("--tracker"), "{e}");
}
