//! Small async helpers that work the same natively and in the browser.
//!
//! wgpu reports some results through callbacks (buffer mapping, queue completion). In the
//! browser they fire from the JS event loop, natively they fire inside `device.poll`.
//! [`Callback`] turns such a callback into a future either way; [`block_on`] drives a
//! future to completion on native targets (tests, the command-line tool).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

/// A one-shot future completed by its [`Sender`] (see [`Callback::new`]).
pub(crate) struct Callback<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

/// The sending half of a [`Callback`]. wgpu requires its callbacks to be `Send`
/// natively; the slot is shared through `Arc<Mutex<..>>`, so the sender is `Send`
/// exactly where its value is, whichever thread calls it.
pub(crate) struct Sender<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

impl<T> Sender<T> {
    pub(crate) fn send(self, value: T) {
        let waker = {
            let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
            slot.value = Some(value);
            slot.waker.take()
        };
        // Woken after the lock is released: a waker that polls at once finds the value.
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Callback<T> {
    pub(crate) fn new() -> (Sender<T>, Callback<T>) {
        let slot = Arc::new(Mutex::new(Slot { value: None, waker: None }));
        (Sender { slot: slot.clone() }, Callback { slot })
    }
}

impl<T> Future for Callback<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        match slot.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Runs a future to completion on the current thread (native only: a browser must never
/// block, it awaits instead).
#[cfg(not(target_arch = "wasm32"))]
pub fn block_on<F: Future>(fut: F) -> F::Output {
    use std::task::Wake;
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// Lets the browser's event loop take a turn (a zero-delay timer): the CPU backend computes
/// synchronously, so without this a worker would not see any message (an abort) until
/// the whole call ends. GPU work yields by itself while waiting for the GPU.
#[cfg(target_arch = "wasm32")]
pub(crate) async fn yield_to_event_loop() {
    use wasm_bindgen::JsCast;
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        let global = js_sys::global();
        let timer = js_sys::Reflect::get(&global, &"setTimeout".into()).ok().and_then(|f| f.dyn_into::<js_sys::Function>().ok());
        let scheduled = timer.is_some_and(|f| f.call2(&global, &resolve, &0.into()).is_ok());
        if !scheduled {
            let _ = resolve.call0(&wasm_bindgen::JsValue::UNDEFINED);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use std::marker::PhantomData;
    use std::rc::Rc;

    use super::*;

    /// Whether `T` is `Send`, at compile time: the inherent constant exists only where
    /// `T: Send`, and otherwise the trait's default answers.
    struct IsSend<T>(PhantomData<T>);
    trait NotSend {
        const SEND: bool = false;
    }
    impl<T> NotSend for IsSend<T> {}
    impl<T: Send> IsSend<T> {
        const SEND: bool = true;
    }

    #[test]
    fn a_sender_is_send_only_where_its_value_is() {
        // Checked while compiling: the test builds only if they hold.
        const { assert!(IsSend::<Sender<Result<(), String>>>::SEND) };
        const { assert!(IsSend::<Sender<()>>::SEND) };
        const { assert!(!IsSend::<Sender<Rc<u8>>>::SEND, "a sender of an Rc must not cross threads") };
        const { assert!(!IsSend::<Rc<u8>>::SEND && IsSend::<u8>::SEND, "the check itself") };
    }

    #[test]
    fn a_callback_completed_on_another_thread_wakes_its_waiter() {
        let (tx, done) = Callback::new();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            tx.send(42u32);
        });
        assert_eq!(block_on(done), 42);
        sender.join().unwrap();
    }
}
