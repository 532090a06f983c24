use std::convert::Infallible;

use http_body_util::{BodyExt, Full};
use tower::{Layer, Service, ServiceExt};

use super::*;

const MIB: usize = 1 << 20;

fn answer(layer: &BoundedAnswersLayer, exempt: bool) -> Answer {
    Answer {
        budget: layer.budget(),
        share: None,
        piece: layer.piece,
        conn: None,
        exempt,
    }
}

async fn next<B: Body<Data = Bytes> + Unpin>(body: &mut B) -> Option<Frame<Bytes>>
where
    B::Error: std::fmt::Debug,
{
    tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the body stalled")
        .map(|f| f.expect("frame"))
}

#[tokio::test]
async fn an_answer_is_charged_until_hyper_has_taken_each_piece() {
    let layer = BoundedAnswersLayer::new(4 * MIB, Duration::from_secs(20), 64 * 1024);
    let budget = layer.budget();
    let mut body = Bounded::new(
        Full::new(Bytes::from(vec![7u8; 200_000])),
        answer(&layer, false),
    );
    assert_eq!(
        budget.used(),
        0,
        "nothing is charged before the body is read"
    );
    let mut sizes = Vec::new();
    let mut charged = Vec::new();
    while let Some(frame) = next(&mut body).await {
        sizes.push(frame.into_data().unwrap().len());
        charged.push(budget.used());
    }
    assert_eq!(sizes, [65_536, 65_536, 65_536, 3_392]);
    // Charged: what hyper holds and what waits behind it.
    assert_eq!(charged, [200_000, 134_464, 68_928, 3_392]);
    assert_eq!(budget.used(), 0, "all given back once hyper came back");
}

#[tokio::test]
async fn a_body_dropped_unread_gives_its_charge_back() {
    let layer = BoundedAnswersLayer::new(4 * MIB, Duration::from_secs(20), usize::MAX);
    let budget = layer.budget();
    let mut body = Bounded::new(
        Full::new(Bytes::from(vec![1u8; 500_000])),
        answer(&layer, false),
    );
    let first = next(&mut body).await.unwrap();
    assert_eq!(first.into_data().unwrap().len(), 500_000);
    assert_eq!(budget.used(), 500_000, "hyper holds it: still charged");
    drop(body);
    assert_eq!(budget.used(), 0);
}

fn grpc_status(headers: &http::HeaderMap) -> Option<&str> {
    headers.get("grpc-status").and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn a_spent_budget_refuses_new_calls_but_not_health() {
    let layer = BoundedAnswersLayer::new(1000, Duration::from_secs(20), usize::MAX);
    let budget = layer.budget();
    // A client that reads nothing holds 1,500 bytes.
    let mut held = Bounded::new(
        Full::new(Bytes::from(vec![1u8; 1500])),
        answer(&layer, false),
    );
    next(&mut held).await.unwrap();
    assert_eq!(budget.used(), 1500);

    let inner = tower::service_fn(|_req: http::Request<()>| async {
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
            b"answer",
        ))))
    });
    let mut svc = layer.layer(inner);
    let call = |path: &str| http::Request::post(path).body(()).unwrap();
    let refused = svc
        .ready()
        .await
        .unwrap()
        .call(call("/hive.tracker.v1.Tracker/Locate"))
        .await
        .unwrap();
    assert_eq!(
        grpc_status(refused.headers()),
        Some("8"),
        "RESOURCE_EXHAUSTED"
    );
    let message = refused
        .headers()
        .get("grpc-message")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(message.contains("answer-budget-mib"), "{message}");
    assert!(refused.body().is_end_stream(), "a trailers-only answer");

    let health = svc
        .ready()
        .await
        .unwrap()
        .call(call("/grpc.health.v1.Health/Check"))
        .await
        .unwrap();
    assert_eq!(grpc_status(health.headers()), None);
    let mut body = health.into_body();
    let data = next(&mut body).await.unwrap().into_data().unwrap();
    assert_eq!(&data[..], b"answer");

    // Read at last: the budget has room again.
    drop(held);
    let served = svc
        .ready()
        .await
        .unwrap()
        .call(call("/hive.tracker.v1.Tracker/Locate"))
        .await
        .unwrap();
    assert_eq!(grpc_status(served.headers()), None);
}

#[tokio::test]
async fn one_address_may_hold_a_quarter_of_the_budget() {
    let layer = BoundedAnswersLayer::new(4000, Duration::from_secs(20), usize::MAX);
    let budget = layer.budget();
    let (greedy, other) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
    let charged = |ip| Answer {
        share: Some(budget.share_of(ip)),
        ..answer(&layer, false)
    };
    let mut held = Bounded::new(Full::new(Bytes::from(vec![1u8; 1000])), charged(greedy));
    next(&mut held).await.unwrap();
    assert!(
        budget.spent(Some(&budget.share_of(greedy))),
        "its quarter is spent"
    );
    assert!(
        !budget.spent(Some(&budget.share_of(other))),
        "another address has room"
    );
    let mut body = Bounded::new(Full::new(Bytes::from(vec![1u8; 10])), charged(greedy));
    assert!(next(&mut body).await.unwrap().is_trailers(), "refused");
    drop(held);
    assert_eq!(budget.share_of(greedy).load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn an_answer_made_while_the_budget_was_spent_is_replaced_by_a_refusal() {
    let layer = BoundedAnswersLayer::new(1000, Duration::from_secs(20), usize::MAX);
    let mut body = Bounded::new(Full::new(Bytes::from(vec![1u8; 10])), answer(&layer, false));
    let mut held = Bounded::new(
        Full::new(Bytes::from(vec![1u8; 1500])),
        answer(&layer, false),
    );
    next(&mut held).await.unwrap();
    let frame = next(&mut body).await.unwrap();
    let trailers = frame
        .into_trailers()
        .expect("trailers in place of the answer");
    assert_eq!(grpc_status(&trailers), Some("8"));
    assert!(next(&mut body).await.is_none());
    assert_eq!(layer.budget().used(), 1500, "the refusal charged nothing");
}
