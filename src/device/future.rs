//! Small async helpers that work the same natively and in the browser.
//!
//! wgpu reports some results through callbacks (buffer mapping, queue completion). In the
//! browser they fire from the JS event loop, natively they fire inside `device.poll`.
//! [`Callback`] turns such a callback into a future either way; [`block_on`] drives a
//! future to completion on native targets (tests, the command-line tool).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

/// A one-shot future completed by calling the closure from [`Callback::new`].
pub struct Callback<T> {
    slot: Rc<RefCell<Slot<T>>>,
}

/// The sending half of a [`Callback`]. It is `Send` only in name: wgpu requires callbacks
/// to be `Send` natively, but this crate drives a device from one thread only.
pub struct Sender<T> {
    slot: Rc<RefCell<Slot<T>>>,
}

// SAFETY: wgpu invokes map/work-done callbacks on the thread that calls `device.poll`
// (native) or on the JS event loop (wasm, single-threaded). `Device` is neither Send nor Sync,
// so the thread that created the callback is the one that polls.
unsafe impl<T> Send for Sender<T> {}

impl<T> Sender<T> {
    pub fn send(self, value: T) {
        let mut slot = self.slot.borrow_mut();
        slot.value = Some(value);
        if let Some(w) = slot.waker.take() {
            w.wake();
        }
    }
}

impl<T> Callback<T> {
    pub fn new() -> (Sender<T>, Callback<T>) {
        let slot = Rc::new(RefCell::new(Slot { value: None, waker: None }));
        (Sender { slot: slot.clone() }, Callback { slot })
    }
}

impl<T> Future for Callback<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut slot = self.slot.borrow_mut();
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
    use std::sync::Arc;
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
