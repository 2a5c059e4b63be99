//! Batch reads for the CLI backup: the fetch queues of the assigned partitions forwarded to one
//! queue of our own, read many messages per call (`rd_kafka_consume_batch_queue`).
//!
//! rdkafka's `BaseConsumer::poll` hands out one message per call through librdkafka's event
//! API: a clock read, a queue lock with its futex traffic, an event and an `Arc` per message.
//! At 100-byte records that was a third of the backup's CPU. Here the queue is locked and the
//! clock read once per call for up to [`FetchQueue::read`]'s `max` messages.
//!
//! Only the partitions' messages and their errors (partition end, offset out of range...)
//! come through this queue; the consumer's own queue still carries the client-wide events
//! (authentication failures, logs), so the caller keeps polling the consumer too.

use super::client::QuietContext;
use crate::record::TimestampType;
use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use std::ffi::{c_void, CStr, CString};
use std::marker::PhantomData;
use std::time::Duration;

/// A queue of our own receiving the fetched messages of some partitions of one consumer.
pub struct FetchQueue<'c> {
    queue: *mut rdsys::rd_kafka_queue_t,
    /// The consumer's own queue (client-wide events), to see how many wait; may be null.
    client_events: *mut rdsys::rd_kafka_queue_t,
    /// Messages of the last read, destroyed by the next read or the drop.
    held: Vec<*mut rdsys::rd_kafka_message_t>,
    _consumer: PhantomData<&'c BaseConsumer<QuietContext>>,
}

// SAFETY: the queue and the messages belong to the consumer, which is borrowed for the
// queue's lifetime; librdkafka's queue calls are thread-safe.
unsafe impl Send for FetchQueue<'_> {}

impl<'c> FetchQueue<'c> {
    /// Forwards the fetch queue of each partition in `tps` to a new queue. Call before the
    /// partitions are assigned: an application's forward stays when the fetch starts (the
    /// consumer's queue would otherwise be set on the partitions when they start fetching).
    pub fn new<'t>(
        consumer: &'c BaseConsumer<QuietContext>,
        tps: impl IntoIterator<Item = (&'t str, i32)>,
    ) -> Option<FetchQueue<'c>> {
        let rk = consumer.client().native_ptr();
        // SAFETY: rk is the live consumer's handle.
        let queue = unsafe { rdsys::rd_kafka_queue_new(rk) };
        if queue.is_null() {
            return None;
        }
        let me = FetchQueue {
            queue,
            // SAFETY: a new reference to the consumer's queue (null without a group id).
            client_events: unsafe { rdsys::rd_kafka_queue_get_consumer(rk) },
            held: Vec::new(),
            _consumer: PhantomData,
        };
        for (topic, partition) in tps {
            let topic = CString::new(topic).ok()?;
            // SAFETY: a new reference to the partition's fetch queue (the partition is created
            // if the client does not know it yet), released right after the forward, which
            // is kept on the queue itself.
            unsafe {
                let part = rdsys::rd_kafka_queue_get_partition(rk, topic.as_ptr(), partition);
                if part.is_null() {
                    return None;
                }
                rdsys::rd_kafka_queue_forward(part, me.queue);
                rdsys::rd_kafka_queue_destroy(part);
            }
        }
        Some(me)
    }

    /// Up to `max` messages, waiting up to `timeout` for the first; empty after the timeout.
    /// The messages of the previous read are released first.
    pub fn read(&mut self, timeout: Duration, max: usize) -> &[Msg<'_>] {
        self.release();
        self.held.resize(max.max(1), std::ptr::null_mut());
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: held has room for max pointers; librdkafka fills the first n.
        let n = unsafe {
            rdsys::rd_kafka_consume_batch_queue(
                self.queue,
                ms,
                self.held.as_mut_ptr(),
                self.held.len(),
            )
        };
        self.held.truncate(n.max(0) as usize);
        // SAFETY: Msg is a transparent wrapper of the message pointer.
        unsafe { std::slice::from_raw_parts(self.held.as_ptr().cast::<Msg<'_>>(), self.held.len()) }
    }

    /// How many client-wide events (errors, logs) wait on the consumer's own queue, which
    /// `BaseConsumer::poll` serves one per call: poll that many times (at least once).
    pub fn client_events(&self) -> usize {
        if self.client_events.is_null() {
            return 1;
        }
        // SAFETY: our reference to the consumer's queue.
        unsafe { rdsys::rd_kafka_queue_length(self.client_events) }
    }

    fn release(&mut self) {
        for m in self.held.drain(..) {
            if !m.is_null() {
                // SAFETY: returned by rd_kafka_consume_batch_queue, destroyed once.
                unsafe { rdsys::rd_kafka_message_destroy(m) };
            }
        }
    }
}

impl Drop for FetchQueue<'_> {
    fn drop(&mut self) {
        self.release();
        // SAFETY: our queue handles, destroyed once, before the consumer (borrowed).
        unsafe {
            rdsys::rd_kafka_queue_destroy(self.queue);
            if !self.client_events.is_null() {
                rdsys::rd_kafka_queue_destroy(self.client_events);
            }
        }
    }
}

/// One message of a [`FetchQueue::read`], valid until the next read.
#[repr(transparent)]
pub struct Msg<'a>(*mut rdsys::rd_kafka_message_t, PhantomData<&'a ()>);

impl Msg<'_> {
    fn raw(&self) -> &rdsys::rd_kafka_message_t {
        // SAFETY: a live message of the last read.
        unsafe { &*self.0 }
    }

    /// The error this message carries instead of a record (partition end, for one).
    pub fn error(&self) -> Option<RDKafkaErrorCode> {
        let err = self.raw().err;
        (err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR).then(|| err.into())
    }

    /// The topic's name ("" in the unlikely case librdkafka has none).
    pub fn topic(&self) -> &str {
        let rkt = self.raw().rkt;
        if rkt.is_null() {
            return "";
        }
        // SAFETY: the topic handle lives as long as the message, its name is NUL-terminated.
        unsafe { CStr::from_ptr(rdsys::rd_kafka_topic_name(rkt)) }
            .to_str()
            .unwrap_or("")
    }

    /// The partition number.
    pub fn partition(&self) -> i32 {
        self.raw().partition
    }

    /// The record's offset (or where the error happened).
    pub fn offset(&self) -> i64 {
        self.raw().offset
    }

    /// The key; `None` for a null key (distinct from an empty one).
    pub fn key(&self) -> Option<&[u8]> {
        let m = self.raw();
        // SAFETY: key_len bytes at key, owned by the message.
        bytes(m.key, m.key_len)
    }

    /// The value; `None` for a null value (a tombstone).
    pub fn payload(&self) -> Option<&[u8]> {
        let m = self.raw();
        bytes(m.payload, m.len)
    }

    /// The timestamp and its type.
    pub fn timestamp(&self) -> (i64, TimestampType) {
        let mut tstype = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: a live message; tstype is written by the call.
        let ts = unsafe { rdsys::rd_kafka_message_timestamp(self.0, &mut tstype) };
        match tstype {
            rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_CREATE_TIME => {
                (ts, TimestampType::CreateTime)
            }
            rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME => {
                (ts, TimestampType::LogAppendTime)
            }
            _ => (-1, TimestampType::NoTimestamp),
        }
    }

    /// The headers in order, each a key and a value (`None`: a null value); `None` when a
    /// header's key is not UTF-8 (Kafka's Java clients write UTF-8 keys only; the backup
    /// format keeps keys as UTF-8).
    pub fn headers(&self) -> Option<Headers<'_>> {
        let mut hdrs: *mut rdsys::rd_kafka_headers_t = std::ptr::null_mut();
        // SAFETY: a live message; the headers it parses belong to it.
        let err = unsafe { rdsys::rd_kafka_message_headers(self.0, &mut hdrs) };
        let n = if err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && !hdrs.is_null()
        {
            // SAFETY: hdrs is the message's header list.
            unsafe { rdsys::rd_kafka_header_cnt(hdrs) }
        } else {
            0
        };
        let headers = Headers {
            hdrs,
            next: 0,
            n,
            _msg: PhantomData,
        };
        let mut check = headers;
        (0..n).all(|_| check.get().is_some()).then_some(headers)
    }
}

fn bytes<'a>(ptr: *mut c_void, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the caller's pointer and length describe bytes owned by a live message.
    Some(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

/// The headers of a [`Msg`], an iterator of known length.
#[derive(Clone, Copy)]
pub struct Headers<'a> {
    hdrs: *mut rdsys::rd_kafka_headers_t,
    next: usize,
    n: usize,
    _msg: PhantomData<&'a ()>,
}

impl<'a> Headers<'a> {
    /// The next header; `None` past the end or for a key that is not UTF-8.
    fn get(&mut self) -> Option<(&'a str, Option<&'a [u8]>)> {
        if self.next >= self.n {
            return None;
        }
        let i = self.next;
        self.next += 1;
        let mut name = std::ptr::null();
        let mut value = std::ptr::null();
        let mut size = 0usize;
        // SAFETY: i < the header count; the name and value belong to the message.
        let err = unsafe {
            rdsys::rd_kafka_header_get_all(self.hdrs, i, &mut name, &mut value, &mut size)
        };
        if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            return None;
        }
        // SAFETY: a NUL-terminated header name owned by the message.
        let name = unsafe { CStr::from_ptr(name) }.to_str().ok()?;
        Some((name, bytes(value.cast_mut(), size)))
    }
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a str, Option<&'a [u8]>);

    /// Every header: [`Msg::headers`] checked them all.
    fn next(&mut self) -> Option<Self::Item> {
        self.get()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.n - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Headers<'_> {}
