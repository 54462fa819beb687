# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The replay hot loop, compiled: stored records of the Ledger's stream -> the three views.

Why it exists: a full replay in interpreted Python costs ~3 us per event (checksum, two
msgpack unpacks into ~20 objects, an event tuple, ~20 column writes), five times what LMDB
and msgpack alone take. This loop takes the common records (status updates, task created,
task assigned) from their bytes straight into the views' columns as typed memory.

Three ways through, each falling back to the next when unsure:
1. direct: the record's bytes are read in place (the msgpack subset the store and the
   events write: arrays, nil, booleans, ints, float64, str, bin, an empty map); only the
   task id becomes a Python object, repeated texts (state, source, reason, agent) are
   matched against the last one seen per field. Anything outside that subset -> 2.
2. unpacked: msgpack.unpackb, then the same apply from the Python values, and the event
   tuple handed to `after` (a LedgerState's saga and dedup memory) when the saga needs it.
3. Python: anything else (other kinds, other versions, odd field types, an illegal
   transition, a duplicate creation, a stale Mesos update, a bad checksum, a damaged
   record) goes to the Python code this mirrors, which raises the same errors and records
   the same facts.

A LedgerState's saga and dedup memory mostly need nothing of these kinds: the saga's evolve
changes its state for one only while it `listens` (a reconciliation run is active), when the
event moved its task (`saga.task_moved`, mirrored here), or for an illegal move of a status
update (those take way 2); the dedup memory stores a status update's uuid in its 24-byte
slot (mirrored here; other uuids take way 2). So way 1 serves a LedgerState too while the
saga does not listen (engine/saga.py says what its evolve reads). Of task_moved, the
transient and partitioned timers are held back for a run of moves and applied at once
before any event goes to Python and when the replay ends (`finish`): what they hold depends
only on each task's last move, and applying moves one by one kept a dict as large as the
tasks in flight in the cache's way.

What it may NOT do: decide anything the Python views do not. It holds no table of its own:
every table (state codes, the lifecycle's steps, the Mesos staleness rule, the drift cells,
the topics and schema versions) is read at construction from the modules that own them
(engine/replay.py). A hypothesis property (tests/test_replay_kernel.py) checks that kernel
and Python path leave equal views and states on random logs, odd values and damaged
records included.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Contains, PyDict_DelItem, PyDict_GetItem, PyDict_SetItem
from cpython.dict cimport PyDict_Size
from cpython.float cimport PyFloat_FromDouble
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memchr, memcmp, memcpy, memset

from msgpack import unpackb as _unpack

# Kinds with a compiled path (their wire layouts are checked by engine/replay.py).
DEF K_OTHER = 0
DEF K_STATUS = 1
DEF K_CREATED = 2
DEF K_ASSIGNED = 3

# Step kinds of the scheduler lifecycle table.
DEF STEP_NOOP = 0
DEF STEP_ALLOWED = 1
DEF STEP_ILLEGAL = 2

DEF MAX_TOPICS = 64
DEF MAX_TOPIC_LEN = 48
DEF CACHE_LEN = 64  # longest text a field cache remembers

# What the direct reader found in a field.
DEF F_BAIL = -1
DEF F_NIL = 0
DEF F_VALUE = 1  # a text (s, n set) or a float

# ---- CRC-32 ----------------------------------------------------------------------------------
# zlib's polynomial, slice-by-8: the record frame's checksum without two calls into Python's
# zlib per record. tests/test_replay_kernel.py checks it against zlib.crc32.
cdef uint32_t _CRC[8][256]


cdef void _crc_init() noexcept:
    cdef uint32_t c
    cdef int i, k, bit
    for i in range(256):
        c = i
        for bit in range(8):
            c = (c >> 1) ^ (0xEDB88320 if c & 1 else 0)
        _CRC[0][i] = c
    for i in range(256):
        c = _CRC[0][i]
        for k in range(1, 8):
            c = _CRC[0][c & 0xFF] ^ (c >> 8)
            _CRC[k][i] = c


_crc_init()


cdef inline uint32_t _le32(const unsigned char* p) noexcept:
    return (<uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16)
            | (<uint32_t>p[3] << 24))


cdef uint32_t _crc32(uint32_t crc, const unsigned char* p, Py_ssize_t n) noexcept:
    """zlib.crc32(bytes(p[:n]), crc)."""
    cdef uint32_t one, two
    crc = ~crc
    while n >= 8:
        one = _le32(p) ^ crc
        two = _le32(p + 4)
        crc = (_CRC[7][one & 0xFF] ^ _CRC[6][(one >> 8) & 0xFF] ^ _CRC[5][(one >> 16) & 0xFF]
               ^ _CRC[4][one >> 24] ^ _CRC[3][two & 0xFF] ^ _CRC[2][(two >> 8) & 0xFF]
               ^ _CRC[1][(two >> 16) & 0xFF] ^ _CRC[0][two >> 24])
        p += 8
        n -= 8
    while n > 0:
        crc = _CRC[0][(crc ^ p[0]) & 0xFF] ^ (crc >> 8)
        p += 1
        n -= 1
    return ~crc


def crc32(data: bytes, start: int = 0) -> int:
    """The kernel's CRC-32, for the tests (equal to zlib.crc32)."""
    return _crc32(<uint32_t>start, <const unsigned char*>PyBytes_AS_STRING(data),
                  PyBytes_GET_SIZE(data))


cdef inline uint64_t _be64(const unsigned char* p) noexcept:
    return ((<uint64_t>p[0] << 56) | (<uint64_t>p[1] << 48) | (<uint64_t>p[2] << 40)
            | (<uint64_t>p[3] << 32) | (<uint64_t>p[4] << 24) | (<uint64_t>p[5] << 16)
            | (<uint64_t>p[6] << 8) | <uint64_t>p[7])


cdef inline uint32_t _be32(const unsigned char* p) noexcept:
    return ((<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8)
            | <uint32_t>p[3])


# ---- the direct reader: a msgpack subset, read in place -------------------------------------
# Every reader returns F_BAIL for anything outside the subset (or past the end); the caller
# then takes the record the unpacked way, so the subset only has to be right, not complete.
cdef struct Reader:
    const unsigned char* p
    const unsigned char* end


cdef inline Py_ssize_t _array(Reader* r) noexcept:
    """An array header: its length, or F_BAIL."""
    cdef unsigned char b
    cdef Py_ssize_t length
    if r.p >= r.end:
        return F_BAIL
    b = r.p[0]
    if 0x90 <= b <= 0x9F:
        r.p += 1
        return b & 0x0F
    if b == 0xDC and r.end - r.p >= 3:
        length = (<Py_ssize_t>r.p[1] << 8) | r.p[2]
        r.p += 3
        return length
    return F_BAIL


cdef inline int _uint(Reader* r, uint64_t* out) noexcept:
    """A non-negative int (any width): 0, or F_BAIL."""
    cdef unsigned char b
    cdef Py_ssize_t left = r.end - r.p
    if left < 1:
        return F_BAIL
    b = r.p[0]
    if b <= 0x7F:
        out[0] = b
        r.p += 1
    elif b == 0xCC and left >= 2:
        out[0] = r.p[1]
        r.p += 2
    elif b == 0xCD and left >= 3:
        out[0] = (<uint64_t>r.p[1] << 8) | r.p[2]
        r.p += 3
    elif b == 0xCE and left >= 5:
        out[0] = _be32(r.p + 1)
        r.p += 5
    elif b == 0xCF and left >= 9:
        out[0] = _be64(r.p + 1)
        r.p += 9
    else:
        return F_BAIL
    return 0


cdef inline int _f64(Reader* r, double* out) noexcept:
    """A float64 (what msgpack writes for a Python float): F_VALUE, F_NIL, or F_BAIL."""
    cdef uint64_t bits
    if r.p >= r.end:
        return F_BAIL
    if r.p[0] == 0xC0:
        r.p += 1
        return F_NIL
    if r.p[0] != 0xCB or r.end - r.p < 9:
        return F_BAIL
    bits = _be64(r.p + 1)
    memcpy(out, &bits, 8)
    r.p += 9
    return F_VALUE


cdef inline bint _ascii(const unsigned char* s, Py_ssize_t n) noexcept:
    cdef Py_ssize_t i
    for i in range(n):
        if s[i] & 0x80:
            return False
    return True


cdef inline int _str(Reader* r, const unsigned char** s, Py_ssize_t* n) noexcept:
    """A str or nil: F_VALUE (s, n set), F_NIL, or F_BAIL. Non-ASCII text bails: msgpack
    would check its UTF-8, and the unpacked way does exactly that."""
    cdef unsigned char b
    cdef Py_ssize_t length, head, left = r.end - r.p
    if left < 1:
        return F_BAIL
    b = r.p[0]
    if b == 0xC0:
        r.p += 1
        return F_NIL
    if 0xA0 <= b <= 0xBF:
        length, head = b & 0x1F, 1
    elif b == 0xD9 and left >= 2:
        length, head = r.p[1], 2
    elif b == 0xDA and left >= 3:
        length, head = (<Py_ssize_t>r.p[1] << 8) | r.p[2], 3
    else:
        return F_BAIL
    if left - head < length or not _ascii(r.p + head, length):
        return F_BAIL
    s[0] = r.p + head
    n[0] = length
    r.p += head + length
    return F_VALUE


cdef inline int _bin(Reader* r, const unsigned char** s, Py_ssize_t* n) noexcept:
    """A bin: 0 (s, n set), or F_BAIL."""
    cdef unsigned char b
    cdef Py_ssize_t length, head, left = r.end - r.p
    if left < 2:
        return F_BAIL
    b = r.p[0]
    if b == 0xC4:
        length, head = r.p[1], 2
    elif b == 0xC5 and left >= 3:
        length, head = (<Py_ssize_t>r.p[1] << 8) | r.p[2], 3
    elif b == 0xC6 and left >= 5:
        length, head = _be32(r.p + 1), 5
    else:
        return F_BAIL
    if left - head < length:
        return F_BAIL
    s[0] = r.p + head
    n[0] = length
    r.p += head + length
    return 0


cdef inline int _skip(Reader* r) noexcept:
    """Steps over one scalar (nil, bool, int, float, ASCII str, bin): 0, or F_BAIL."""
    cdef unsigned char b
    cdef const unsigned char* s
    cdef Py_ssize_t n, left = r.end - r.p
    if left < 1:
        return F_BAIL
    b = r.p[0]
    if b <= 0x7F or b >= 0xE0 or b == 0xC0 or b == 0xC2 or b == 0xC3:
        n = 1  # fixint, negative fixint, nil, false, true
    elif b == 0xCC or b == 0xD0:
        n = 2
    elif b == 0xCD or b == 0xD1:
        n = 3
    elif b == 0xCE or b == 0xD2 or b == 0xCA:
        n = 5
    elif b == 0xCF or b == 0xD3 or b == 0xCB:
        n = 9
    elif 0xA0 <= b <= 0xBF or b == 0xD9 or b == 0xDA:
        return 0 if _str(r, &s, &n) == F_VALUE else F_BAIL
    elif 0xC4 <= b <= 0xC6:
        return _bin(r, &s, &n)
    else:
        return F_BAIL  # ext, arrays, maps, str32: the unpacked way
    if left < n:
        return F_BAIL
    r.p += n
    return 0


cdef inline int _bool(Reader* r, int* out) noexcept:
    if r.p >= r.end or (r.p[0] != 0xC2 and r.p[0] != 0xC3):
        return F_BAIL
    out[0] = r.p[0] == 0xC3
    r.p += 1
    return 0


cdef inline int _empty_map(Reader* r) noexcept:
    if r.p >= r.end or r.p[0] != 0x80:
        return F_BAIL
    r.p += 1
    return 0


# The last text seen in one field and its code: most records repeat their neighbour's
# state, source, reason, job, agent.
cdef struct Cache:
    Py_ssize_t length  # -1: empty
    int code
    unsigned char text[CACHE_LEN]


cdef inline bint _cached(Cache* c, const unsigned char* s, Py_ssize_t n) noexcept:
    return c.length == n and memcmp(c.text, s, n) == 0


cdef inline void _remember(Cache* c, const unsigned char* s, Py_ssize_t n, int code) noexcept:
    if n <= CACHE_LEN:
        memcpy(c.text, s, n)
        c.length = n
        c.code = code


cdef class Kernel:
    """Applies chunks of raw (key, value) notification records to one Views (and hands
    every applied event to `after`, for the parts of a LedgerState beyond the views)."""

    # the views and their Python-side objects
    cdef object views, index, rows, strings, codes, code_of, mesos, scheduler, drift
    cdef object stale_rows, disagree, scheduler_move
    # tables (engine/replay.py builds them from the owning modules)
    cdef bytes stream
    cdef dict topics, mesos_code
    cdef int format_version, header_size, mesos_width, sched_width
    cdef int killing, pending, init, assigned, created_effects
    cdef int flag_answer, flag_timestamp
    cdef unsigned char[::1] stale_table, target_of_mesos, cell_at, disagrees
    cdef unsigned char[::1] step_kind, step_state, step_effects, step_failures
    cdef object new_tuple
    # topics by number, for the direct reader
    cdef int n_topics
    cdef int topic_kind[MAX_TOPICS]
    cdef int topic_version[MAX_TOPICS]
    cdef int topic_length[MAX_TOPICS]
    cdef Py_ssize_t topic_text_length[MAX_TOPICS]
    cdef unsigned char topic_text[MAX_TOPICS][MAX_TOPIC_LEN]
    cdef int last_topic
    cdef Cache c_state, c_source, c_reason, c_agent, c_job
    # columns, re-acquired for every chunk (arrays may be reallocated between chunks)
    cdef unsigned char[::1] m_state, m_flags, s_state, s_previous, s_effects, d_cell
    cdef int[::1] m_source, m_reason, m_agent, s_job, s_instance, s_agent
    cdef double[::1] m_timestamp, m_time, s_time
    cdef long long[::1] m_nid, s_nid, d_since
    cdef unsigned int[::1] s_failures
    cdef Py_ssize_t m_count, s_count, d_count
    cdef bint held  # columns and counts taken by _acquire, not yet handed back
    # events applied per topic number (the 5th item of a topic's spec)
    cdef long long[::1] by_topic
    # A LedgerState's saga and dedup memory (engine/saga.py, engine/dedup.py), if replaying
    # into one; `quiet`: the saga does not listen (see the module docstring).
    cdef bint ledger, quiet
    cdef object saga, listens, obligation, cause_update, cause_update_lost
    cdef dict transient, partitioned, transient_asked, uuid_other
    cdef list obligations, move_actions
    cdef unsigned char[::1] saga_transient, uuid_slots
    cdef int saga_partitioned, saga_lost, uuid_width
    cdef tuple topic_cause
    cdef object _uuids
    # Tasks the kernel moved whose saga timers (transient, partitioned) are not applied yet,
    # in the order first moved, with their ids; `moved_row[row]`: the row is among them.
    cdef Py_ssize_t* moved
    cdef Py_ssize_t n_moved, moved_capacity, marks_capacity
    cdef unsigned char* moved_row
    cdef list moved_ids

    def __init__(self, views, tables, ledger=None):
        """`ledger`: the LedgerState whose views these are, to apply its saga's and dedup
        memory's part of the kernel's events too (None: the views alone)."""
        self.views = views
        self.index = views.index
        self.rows = self.index.rows
        self.strings = self.index.strings
        self.codes = self.strings.codes
        self.code_of = self.strings.code
        self.mesos = views.mesos
        self.scheduler = views.scheduler
        self.drift = views.drift
        self.stale_rows = self.mesos._stale
        self.disagree = self.drift._disagree
        self.scheduler_move = self.scheduler.move
        self.stream = tables["stream"]
        self.topics = tables["topics"]
        self.mesos_code = tables["mesos_code"]
        self.format_version = tables["format_version"]
        self.header_size = tables["header_size"]
        self.mesos_width = tables["mesos_width"]
        self.sched_width = tables["sched_width"]
        self.killing = tables["killing"]
        self.pending = tables["pending"]
        self.init = tables["init"]
        self.assigned = tables["assigned"]
        self.created_effects = tables["created_effects"]
        self.flag_answer = tables["flag_answer"]
        self.flag_timestamp = tables["flag_timestamp"]
        self.stale_table = tables["stale"]
        self.target_of_mesos = tables["target_of_mesos"]
        self.cell_at = tables["cell_at"]
        self.disagrees = tables["disagrees"]
        self.step_kind = tables["step_kind"]
        self.step_state = tables["step_state"]
        self.step_effects = tables["step_effects"]
        self.step_failures = tables["step_failures"]
        self.by_topic = tables["by_topic"]
        self.new_tuple = tuple.__new__
        if len(self.stream) != 16:
            raise ValueError("the Ledger's stream id must be 16 bytes")
        if len(self.topics) > MAX_TOPICS:
            raise ValueError(f"more than {MAX_TOPICS} event kinds: raise MAX_TOPICS")
        self.n_topics = 0
        for topic, spec in self.topics.items():
            text = topic.encode()
            number = spec[4]
            if len(text) > MAX_TOPIC_LEN or number != self.n_topics:
                raise ValueError(f"topic {topic!r} cannot be matched by the direct reader")
            memcpy(self.topic_text[number], <const char*>text, len(text))
            self.topic_text_length[number] = len(text)
            self.topic_kind[number] = spec[0]
            self.topic_version[number] = spec[2]
            self.topic_length[number] = spec[3]
            self.n_topics += 1
        self.last_topic = 0
        self.c_state.length = self.c_source.length = self.c_reason.length = -1
        self.c_agent.length = self.c_job.length = -1
        self.ledger = ledger is not None
        self.quiet = False
        self.moved = NULL
        self.moved_row = NULL
        self.n_moved = self.moved_capacity = self.marks_capacity = 0
        self.moved_ids = []
        if self.ledger:
            if ledger.views is not views:
                raise ValueError("the LedgerState's views are not these")
            self.saga = ledger.saga
            self.uuid_other = ledger.last_uuid._other
            self.listens = tables["saga_listens"]
            self.obligation = tables["saga_obligation"]
            self.move_actions = tables["saga_move_actions"]
            self.saga_transient = tables["saga_transient"]
            self.saga_partitioned = tables["saga_partitioned"]
            self.saga_lost = tables["saga_lost"]
            self.cause_update, self.cause_update_lost = tables["saga_update_causes"]
            self.topic_cause = tables["saga_topic_cause"]
            self.uuid_width = tables["uuid_width"]
            self._uuids = ledger.last_uuid

    # -- the views' Python-side state, in and out -------------------------------------------
    cdef void _acquire(self) except *:
        m, s, d = self.mesos, self.scheduler, self.drift
        self.m_state = m._state
        self.m_flags = m._flags
        self.m_source = m._source
        self.m_reason = m._reason
        self.m_agent = m._agent
        self.m_timestamp = m._timestamp
        self.m_nid = m._nid
        self.m_time = m._time
        self.s_state = s._state
        self.s_previous = s._previous
        self.s_job = s._job
        self.s_instance = s._instance
        self.s_agent = s._agent
        self.s_nid = s._nid
        self.s_time = s._time
        self.s_failures = s._failures
        self.s_effects = s._effects
        self.d_cell = d._cell
        self.d_since = d._since
        self.m_count = m._count
        self.s_count = s._count
        self.d_count = d._count
        if self.ledger:
            self.uuid_slots = self._uuids._slots
            saga = self.saga
            self.transient = saga.transient
            self.partitioned = saga.partitioned
            self.transient_asked = saga.transient_asked
            self.obligations = saga.obligations
            self.quiet = not self.listens(saga)
        self.held = True

    cdef void _release(self) except *:
        """Hands the counts back and lets go of the buffers (so the arrays may grow). Not
        twice: after the Python path raised, its counts are the right ones."""
        if not self.held:
            return
        self.held = False
        self._store_counts()
        self.m_state = self.m_flags = self.s_state = self.s_previous = None
        self.s_effects = self.d_cell = None
        self.m_source = self.m_reason = self.m_agent = None
        self.s_job = self.s_instance = self.s_agent = None
        self.m_timestamp = self.m_time = self.s_time = None
        self.m_nid = self.s_nid = self.d_since = None
        self.s_failures = None
        self.uuid_slots = None

    cdef void _store_counts(self) except *:
        self.mesos._count = self.m_count
        self.scheduler._count = self.s_count
        self.drift._count = self.d_count

    cdef inline int _code(self, object value) except -1:
        """Strings.code(value), with the common case (already interned) inline."""
        cdef PyObject* found = PyDict_GetItem(self.codes, value)
        if found != NULL:
            return <int><object>found
        return self.code_of(value)

    cdef int _text_code(self, Cache* cache, int kind, const unsigned char* s,
                        Py_ssize_t n) except -2:
        """The code of a text field read in place (kind F_NIL: None, code 0)."""
        if kind == F_NIL:
            return 0
        if _cached(cache, s, n):
            return cache.code
        code = self._code(PyUnicode_DecodeUTF8(<const char*>s, n, NULL))
        _remember(cache, s, n, code)
        return code

    cdef Py_ssize_t _row(self, object task_id) except -1:
        """The task's row, added if new (capacity was reserved for the chunk)."""
        cdef PyObject* found = PyDict_GetItem(self.rows, task_id)
        if found != NULL:
            return <Py_ssize_t><object>found
        row = len(self.rows)
        if row >= self.d_cell.shape[0]:
            raise RuntimeError("replay kernel: the index has no reserved row left")
        PyDict_SetItem(self.rows, task_id, row)
        return row

    cdef void _place(self, Py_ssize_t row, int64_t nid, object task_id) except *:
        """DriftView.place: the cell from the two states; enter it if it changed."""
        cdef int cell = self.cell_at[self.m_state[row] * self.sched_width + self.s_state[row]]
        if cell != self.d_cell[row]:
            self._enter(row, cell, nid, task_id)

    cdef void _enter(self, Py_ssize_t row, int cell, int64_t nid, object task_id) except *:
        """DriftView.enter."""
        if self.d_cell[row] == 0:
            self.d_count += 1
        self.d_cell[row] = cell
        self.d_since[row] = nid
        if self.disagrees[cell]:
            self.disagree.add(task_id)
        else:
            self.disagree.discard(task_id)

    cdef int _step(self, Py_ssize_t row, int target) noexcept:
        """The lifecycle step of the task at `row` towards `target` (index into the steps)."""
        return (
            (self.s_previous[row] == self.killing) * self.sched_width * self.sched_width
            + self.s_state[row] * self.sched_width + target
        )

    cdef bint _move(self, Py_ssize_t row, int64_t nid, double time, object task_id,
                    int target) except -1:
        """SchedulerView.move for a task with a row; True if it moved. An illegal ask goes
        to the Python method, which records it."""
        cdef int at = self._step(row, target)
        cdef int kind = self.step_kind[at]
        if kind == STEP_NOOP:
            return False
        if kind == STEP_ILLEGAL:
            self.scheduler_move(row, nid, time, task_id, target)
            return False
        self.s_previous[row] = self.s_state[row]
        self.s_state[row] = self.step_state[at]
        self.s_nid[row] = nid
        self.s_time[row] = time
        self.s_effects[row] = self.step_effects[at]
        if self.step_failures[at]:
            self.s_failures[row] += 1
        return True

    # -- the three fast kinds, from values ----------------------------------------------------
    cdef bint _stale(self, Py_ssize_t row, int mcode) noexcept:
        """MesosView's rule: a late "alive" update after a final state is not applied (and
        its texts are not interned: check this before computing their codes)."""
        return self.stale_table[self.m_state[row] * self.mesos_width + mcode]

    cdef bint _status(self, Py_ssize_t row, int64_t nid, double time, object task_id,
                      int mcode, bint stale, int source, int reason, int agent,
                      bint has_timestamp, double timestamp, bint answer) except -1:
        """Views.apply for a StatusUpdateReceived at `row` (texts as codes, computed only
        if not `stale`; agent -1: none). True if it moved the task."""
        cdef int sw = self.sched_width
        cdef int before = self.cell_at[self.m_state[row] * sw + self.s_state[row]]
        # MesosView.update
        if stale:
            count, _ = self.stale_rows.get(row, (0, 0))
            self.stale_rows[row] = (count + 1, nid)
        else:
            if self.m_state[row] == 0:
                self.m_count += 1
            self.m_state[row] = mcode
            self.m_source[row] = source
            self.m_reason[row] = reason
            if agent >= 0:
                self.m_agent[row] = agent
            if has_timestamp:
                self.m_timestamp[row] = timestamp
                self.m_flags[row] = (
                    (self.flag_answer | self.flag_timestamp) if answer else self.flag_timestamp
                )
            else:
                self.m_flags[row] = self.flag_answer if answer else 0
            self.m_nid[row] = nid
            self.m_time[row] = time
        # SchedulerView.move to the state Aurora maps this Mesos state to
        cdef bint moved = self._move(row, nid, time, task_id, self.target_of_mesos[mcode])
        cdef int after = self.cell_at[self.m_state[row] * sw + self.s_state[row]]
        if after != before:
            self._enter(row, after, nid, task_id)
        return moved

    cdef bint _creatable(self, object task_id) except -1:
        """Whether Views._created would create the task anew (not a duplicate)."""
        cdef PyObject* found = PyDict_GetItem(self.rows, task_id)
        return found == NULL or self.s_state[<Py_ssize_t><object>found] == 0

    cdef Py_ssize_t _created(self, int64_t nid, double time, object task_id, int job,
                             int instance) except -1:
        """Views._created for a task _creatable says is new; its row."""
        cdef Py_ssize_t row = self._row(task_id)
        self.s_state[row] = self.pending
        self.s_previous[row] = self.init
        self.s_job[row] = job
        self.s_instance[row] = instance
        self.s_agent[row] = 0
        self.s_nid[row] = nid
        self.s_time[row] = time
        self.s_failures[row] = 0
        self.s_effects[row] = self.created_effects
        self.s_count += 1
        self._place(row, nid, task_id)
        return row

    cdef Py_ssize_t _assignable(self, object task_id) except -2:
        """The row Views._assigned would work on, or -1 (no row: the Python path)."""
        cdef PyObject* found = PyDict_GetItem(self.rows, task_id)
        return -1 if found == NULL else <Py_ssize_t><object>found

    # -- a LedgerState's saga and dedup memory -------------------------------------------------
    cdef bint _illegal(self, Py_ssize_t row, int target) noexcept:
        """Whether SchedulerView.move of the task at `row` (-1: none yet, so unknown to the
        scheduler) towards `target` is an illegal ask; read before anything changes."""
        return self.step_kind[target if row < 0 else self._step(row, target)] == STEP_ILLEGAL

    cdef void _saga_moved(self, Py_ssize_t row, int64_t nid, object task_id,
                          int kind) except *:
        """saga.task_moved for the move the event at `nid` (of fast kind `kind`) just made.
        Its timers (transient, partitioned) wait in `moved`: what a run of moves leaves
        there depends only on each task's last move (see _apply_moves)."""
        cdef int st = self.s_state[row]
        cdef Py_ssize_t grown
        if row >= self.marks_capacity:
            grown = max(row + 1, 2 * self.marks_capacity, 1024)
            marks = <unsigned char*>realloc(self.moved_row, grown)
            if marks == NULL:
                raise MemoryError()
            memset(marks + self.marks_capacity, 0, grown - self.marks_capacity)
            self.moved_row, self.marks_capacity = marks, grown
        if not self.moved_row[row]:
            if self.n_moved == self.moved_capacity:
                grown = max(2 * self.moved_capacity, 1024)
                rows = <Py_ssize_t*>realloc(self.moved, grown * sizeof(Py_ssize_t))
                if rows == NULL:
                    raise MemoryError()
                self.moved, self.moved_capacity = rows, grown
            self.moved[self.n_moved] = row
            self.n_moved += 1
            self.moved_ids.append(task_id)
            self.moved_row[row] = 1
        if PyDict_Size(self.transient_asked) and PyDict_Contains(self.transient_asked, task_id):
            PyDict_DelItem(self.transient_asked, task_id)
        actions = self.move_actions[self.s_effects[row]]
        if actions is not None:
            if st == self.saga_lost and kind == K_STATUS:
                cause = self.cause_update_lost
            else:
                cause = self.topic_cause[kind]
            self.obligations.append(self.obligation(nid, task_id, actions, cause))

    cdef void _apply_moves(self) except *:
        """Applies the moves held back to the saga's transient and partitioned timers, as
        saga.task_moved leaves them move by move: each task moved is out of both, then the
        tasks whose last move entered one are in it, with that move's time (the column's),
        in the order of those moves. Needs the columns (held)."""
        cdef Py_ssize_t i, row
        cdef int st
        if self.n_moved == 0:
            return
        transient, partitioned = self.transient, self.partitioned
        entered_transient, entered_partitioned = [], []
        for i in range(self.n_moved):
            row = self.moved[i]
            task_id = self.moved_ids[i]
            self.moved_row[row] = 0
            if PyDict_Size(transient) and PyDict_Contains(transient, task_id):
                PyDict_DelItem(transient, task_id)
            if PyDict_Size(partitioned) and PyDict_Contains(partitioned, task_id):
                PyDict_DelItem(partitioned, task_id)
            st = self.s_state[row]
            if self.saga_transient[st]:
                entered_transient.append((self.s_nid[row], i))
            elif st == self.saga_partitioned:
                entered_partitioned.append((self.s_nid[row], i))
        for into, entered in ((transient, entered_transient), (partitioned, entered_partitioned)):
            entered.sort()
            for _nid, i in entered:
                PyDict_SetItem(into, self.moved_ids[i],
                               PyFloat_FromDouble(self.s_time[self.moved[i]]))
        self.n_moved = 0
        self.moved_ids = []

    def finish(self):
        """Applies what the kernel still holds back (the moves' timers): call it when
        a replay ends, also when it raised."""
        if not self.ledger or self.n_moved == 0:
            return
        self._acquire()
        try:
            self._apply_moves()
        finally:
            self._release()

    def __dealloc__(self):
        free(self.moved)
        free(self.moved_row)

    cdef void _remember(self, Py_ssize_t row, object task_id,
                        const unsigned char* uuid) except *:
        """LastUuids.remember for a uuid that fits its slot (ASCII, the slot's width, no
        NUL)."""
        memcpy(&self.uuid_slots[row * self.uuid_width], uuid, self.uuid_width)
        if PyDict_Size(self.uuid_other) and PyDict_Contains(self.uuid_other, task_id):
            PyDict_DelItem(self.uuid_other, task_id)

    # -- way 1: the record's bytes, read in place ---------------------------------------------
    cdef int _topic(self, const unsigned char* s, Py_ssize_t n) noexcept:
        """The topic number of a topic text, or -1."""
        cdef int i = self.last_topic
        if self.topic_text_length[i] == n and memcmp(self.topic_text[i], s, n) == 0:
            return i
        for i in range(self.n_topics):
            if self.topic_text_length[i] == n and memcmp(self.topic_text[i], s, n) == 0:
                self.last_topic = i
                return i
        return -1

    cdef int _direct(self, int64_t nid, const unsigned char* p, Py_ssize_t n) except -2:
        """Applies a record read in place: 0 applied, 1 not sure (nothing changed)."""
        cdef Reader r, w
        cdef const unsigned char* s = NULL
        cdef const unsigned char* task = NULL
        cdef Py_ssize_t length = 0, task_n = 0
        cdef uint64_t number
        cdef int topic, kind
        cdef double time
        r.p, r.end = p, p + n
        # the store's record: [originator (16 bytes), version, topic, state (bin)]
        if _array(&r) != 4 or _bin(&r, &s, &length) != 0 or length != 16:
            return 1
        if memcmp(s, PyBytes_AS_STRING(self.stream), 16) != 0:
            return 1  # another application's: the unpacked way skips it after its checks
        if _uint(&r, &number) != 0 or _str(&r, &s, &length) != F_VALUE:
            return 1
        topic = self._topic(s, length)
        if topic < 0 or self.topic_kind[topic] == K_OTHER:
            return 1
        if _bin(&r, &s, &length) != 0 or r.p != r.end:
            return 1
        # the event: [schema version, time, causation, task id, ...]
        w.p, w.end = s, s + length
        kind = self.topic_kind[topic]
        if (_array(&w) != self.topic_length[topic] or _uint(&w, &number) != 0
                or number != <uint64_t>self.topic_version[topic]
                or _f64(&w, &time) != F_VALUE or _skip(&w) != 0
                or _str(&w, &task, &task_n) != F_VALUE):
            return 1
        if kind == K_STATUS:
            return self._direct_status(nid, time, task, task_n, &w, topic)
        if kind == K_CREATED:
            return self._direct_created(nid, time, task, task_n, &w, topic)
        return self._direct_assigned(nid, time, task, task_n, &w, topic)

    cdef int _direct_status(self, int64_t nid, double time, const unsigned char* task,
                            Py_ssize_t task_n, Reader* w, int topic) except -2:
        cdef const unsigned char* state = NULL
        cdef const unsigned char* agent = NULL
        cdef const unsigned char* source = NULL
        cdef const unsigned char* reason = NULL
        cdef const unsigned char* uuid = NULL
        cdef Py_ssize_t state_n = 0, agent_n = 0, source_n = 0, reason_n = 0, uuid_n = 0
        cdef int agent_kind, source_kind, reason_kind, ts_kind, answer, mcode
        cdef int uuid_kind = F_NIL
        cdef bint moved
        cdef int source_code = 0, reason_code = 0, agent_code = -1
        cdef double timestamp = 0.0
        cdef Py_ssize_t row
        cdef bint stale
        cdef PyObject* found
        # state, agent_id, executor_id, source, reason, message, timestamp, uuid, healthy,
        # labels, is_reconciliation_answer, extra
        if _str(w, &state, &state_n) != F_VALUE:
            return 1
        agent_kind = _str(w, &agent, &agent_n)
        if agent_kind == F_BAIL or _skip(w) != 0:
            return 1
        source_kind = _str(w, &source, &source_n)
        reason_kind = _str(w, &reason, &reason_n) if source_kind != F_BAIL else F_BAIL
        if reason_kind == F_BAIL or _skip(w) != 0:
            return 1
        ts_kind = _f64(w, &timestamp)
        if ts_kind == F_BAIL:
            return 1
        if self.ledger:  # the dedup memory's uuid
            uuid_kind = _str(w, &uuid, &uuid_n)
            if uuid_kind == F_BAIL or (uuid_kind == F_VALUE and (
                    uuid_n != self.uuid_width or memchr(uuid, 0, uuid_n) != NULL)):
                return 1  # one the memory keeps aside: the unpacked way
        elif _skip(w) != 0:
            return 1
        if (_skip(w) != 0 or _skip(w) != 0 or _bool(w, &answer) != 0
                or _empty_map(w) != 0 or w.p != w.end):
            return 1
        if _cached(&self.c_state, state, state_n):
            mcode = self.c_state.code
        else:
            found = PyDict_GetItem(
                self.mesos_code, PyUnicode_DecodeUTF8(<const char*>state, state_n, NULL)
            )
            if found == NULL:
                return 1  # an unknown state: the Python path names it
            mcode = <int><object>found
            _remember(&self.c_state, state, state_n, mcode)
        task_id = PyUnicode_DecodeUTF8(<const char*>task, task_n, NULL)
        found = PyDict_GetItem(self.rows, task_id)
        row = -1 if found == NULL else <Py_ssize_t><object>found
        if self.ledger and self._illegal(row, self.target_of_mesos[mcode]):
            return 1  # the saga may owe a kill for it: the unpacked way hands it to evolve
        if row < 0:
            row = self._row(task_id)
        stale = self._stale(row, mcode)
        if not stale:  # interned in MesosView.update's order
            source_code = self._text_code(&self.c_source, source_kind, source, source_n)
            reason_code = self._text_code(&self.c_reason, reason_kind, reason, reason_n)
            if agent_kind == F_VALUE:
                agent_code = self._text_code(&self.c_agent, F_VALUE, agent, agent_n)
        moved = self._status(row, nid, time, task_id, mcode, stale, source_code, reason_code,
                             agent_code, ts_kind == F_VALUE, timestamp, answer)
        if self.ledger:
            if moved:
                self._saga_moved(row, nid, task_id, K_STATUS)
            if uuid_kind == F_VALUE:
                self._remember(row, task_id, uuid)
        self.by_topic[topic] += 1
        return 0

    cdef int _direct_created(self, int64_t nid, double time, const unsigned char* task,
                             Py_ssize_t task_n, Reader* w, int topic) except -2:
        cdef const unsigned char* job = NULL
        cdef Py_ssize_t job_n = 0
        cdef int job_kind
        cdef uint64_t instance = 0
        cdef bint has_instance
        cdef int job_code, instance_code
        cdef Py_ssize_t row
        # job, instance, extra
        job_kind = _str(w, &job, &job_n)
        if job_kind == F_BAIL or w.p >= w.end:
            return 1
        has_instance = w.p[0] != 0xC0
        if has_instance:
            if _uint(w, &instance) != 0 or instance > 0x7FFFFFFFFFFFFFFF:
                return 1
        else:
            w.p += 1
        if _empty_map(w) != 0 or w.p != w.end:
            return 1
        task_id = PyUnicode_DecodeUTF8(<const char*>task, task_n, NULL)
        if not self._creatable(task_id):
            return 1
        job_code = self._text_code(&self.c_job, job_kind, job, job_n)  # then the instance's
        instance_code = self._code(<long long>instance) if has_instance else 0
        row = self._created(nid, time, task_id, job_code, instance_code)
        if self.ledger:
            self._saga_moved(row, nid, task_id, K_CREATED)
        self.by_topic[topic] += 1
        return 0

    cdef int _direct_assigned(self, int64_t nid, double time, const unsigned char* task,
                              Py_ssize_t task_n, Reader* w, int topic) except -2:
        cdef const unsigned char* agent = NULL
        cdef Py_ssize_t agent_n = 0, row
        cdef int agent_kind
        # agent_id, extra
        agent_kind = _str(w, &agent, &agent_n)
        if agent_kind == F_BAIL or _empty_map(w) != 0 or w.p != w.end:
            return 1
        task_id = PyUnicode_DecodeUTF8(<const char*>task, task_n, NULL)
        row = self._assignable(task_id)
        if row < 0:
            return 1
        # SchedulerView.assign: the agent is interned only if the task moved
        if self._move(row, nid, time, task_id, self.assigned):
            self.s_agent[row] = self._text_code(&self.c_agent, agent_kind, agent, agent_n)
            if self.ledger:
                self._saga_moved(row, nid, task_id, K_ASSIGNED)
        self._place(row, nid, task_id)
        self.by_topic[topic] += 1
        return 0

    # -- way 2: from the unpacked wire array --------------------------------------------------
    cdef int _unpacked(self, int64_t nid, int kind, list wire) except -2:
        """Applies an unpacked event of a fast kind: 0 applied, 1 the Python path's."""
        cdef PyObject* found
        cdef Py_ssize_t row
        cdef int mcode, source_code = 0, reason_code = 0, agent_code = -1, job_code
        cdef bint stale
        time = wire[1]
        task_id = wire[3]
        if type(time) is not float or type(task_id) is not str:
            return 1
        if kind == K_STATUS:
            state, agent_id, source, reason = wire[4], wire[5], wire[7], wire[8]
            timestamp = wire[10]
            if (type(state) is not str
                    or not (agent_id is None or type(agent_id) is str)
                    or not (source is None or type(source) is str)
                    or not (reason is None or type(reason) is str)
                    or not (timestamp is None or type(timestamp) is float)):
                return 1
            found = PyDict_GetItem(self.mesos_code, state)
            if found == NULL:
                return 1
            mcode = <int><object>found
            row = self._row(task_id)
            stale = self._stale(row, mcode)
            if not stale:  # interned in MesosView.update's order
                source_code = self._code(source)
                reason_code = self._code(reason)
                if agent_id is not None:
                    agent_code = self._code(agent_id)
            self._status(row, nid, time, task_id, mcode, stale, source_code, reason_code,
                         agent_code, timestamp is not None,
                         0.0 if timestamp is None else <double>timestamp, bool(wire[14]))
            return 0
        if kind == K_CREATED:
            job, instance = wire[4], wire[5]
            if (not (job is None or type(job) is str)
                    or not (instance is None or type(instance) is int)
                    or not self._creatable(task_id)):
                return 1
            job_code = self._code(job)  # then the instance's, as SchedulerView.create
            self._created(nid, time, task_id, job_code, self._code(instance))
            return 0
        agent_id = wire[4]
        if not (agent_id is None or type(agent_id) is str):
            return 1
        row = self._assignable(task_id)
        if row < 0:
            return 1
        # SchedulerView.assign: the agent is interned only if the task moved
        if self._move(row, nid, time, task_id, self.assigned):
            self.s_agent[row] = self._code(agent_id)
        self._place(row, nid, task_id)
        return 0

    # -- a chunk ----------------------------------------------------------------------------
    def run(self, list chunk, object apply, object after, object slow):
        """Applies `chunk`, a list of (key, value) records in notification order.

        apply(nid, event): the Python path for an event the kernel does not take.
        after(nid, event) or None: called with each event the kernel applied itself.
        slow(key, value) -> (nid, event) or None: decodes a record the kernel could not
        (raising the store's errors for damaged ones; None for another stream's record).
        Events the kernel decoded are counted in `by_topic` (given at construction, one cell
        per topic number); those `slow` decodes are the caller's to count.
        Returns the notification id of the last event applied (0 if none).
        """
        cdef Py_ssize_t i, n = len(chunk)
        cdef bytes key, value, payload
        cdef const unsigned char* v
        cdef const unsigned char* k
        cdef Py_ssize_t vlen
        cdef int64_t nid = 0, last = 0, own_last = 0  # own_last: applied by the kernel
        cdef int kind, taken
        cdef object record, wire
        cdef tuple spec
        cdef PyObject* found
        cdef int header = self.header_size
        # `after` needs event tuples, unless the saga does not listen (self.quiet): then the
        # direct way applies its part too
        cdef bint views_only = after is None
        if self.ledger and views_only:
            raise ValueError("a kernel made for a LedgerState needs its `after`")
        self._acquire()
        try:
            for i in range(n):
                pair = chunk[i]
                key = pair[0]
                value = pair[1]
                vlen = PyBytes_GET_SIZE(value)
                v = <const unsigned char*>PyBytes_AS_STRING(value)
                wire = None
                spec = None
                if (PyBytes_GET_SIZE(key) == 8 and vlen >= header
                        and v[0] == self.format_version):
                    k = <const unsigned char*>PyBytes_AS_STRING(key)
                    nid = <int64_t>_be64(k)
                    if _crc32(_crc32(0, k, 8), v + header, vlen - header) == _be32(v + 1):
                        if ((views_only or self.quiet)
                                and self._direct(nid, v + header, vlen - header) == 0):
                            last = own_last = nid
                            continue
                        payload = PyBytes_FromStringAndSize(<const char*>v + header,
                                                            vlen - header)
                        try:
                            record = _unpack(payload)
                        except Exception:
                            record = None
                        if (type(record) is list and len(record) == 4
                                and type(record[3]) is bytes):
                            if record[0] != self.stream:
                                continue  # another application's event
                            topic = record[2]
                            found = (
                                PyDict_GetItem(self.topics, topic) if type(topic) is str
                                else NULL
                            )
                            if found != NULL:
                                spec = <tuple>found
                                try:
                                    wire = _unpack(record[3])
                                except Exception:
                                    wire = None
                                if (type(wire) is not list or len(wire) != <Py_ssize_t>spec[3]
                                        or type(wire[0]) is not int or wire[0] != spec[2]
                                        or type(wire[len(wire) - 1]) is not dict):
                                    wire = None
                if wire is None:
                    # Not sure of it: the Python path decodes it (and raises what it raises).
                    self._release()
                    decoded = slow(key, value)
                    self._acquire()
                    if decoded is None:
                        continue
                    nid, event = decoded
                    self._python_apply(apply, nid, event)
                    last = nid
                    continue
                kind = <int>spec[0]
                self.by_topic[<Py_ssize_t>spec[4]] += 1
                taken = kind != K_OTHER and self._unpacked(nid, kind, wire) == 0
                event = self.new_tuple(spec[1], wire[1:]) if (after is not None or not taken) \
                    else None
                if not taken:
                    self._python_apply(apply, nid, event)
                else:
                    own_last = nid
                    if after is not None:
                        # what the saga reads of the views must be as the Python path leaves
                        self._store_counts()
                        self.mesos.last_nid = self.scheduler.last_nid = nid
                        self.drift.last_nid = nid
                        self._apply_moves()
                        after(nid, event)
                        if self.ledger:
                            self.quiet = not self.listens(self.saga)
                last = nid
        finally:
            self._release()
            # The views' last id is the last event applied, by either path (an event the
            # Python path applied set it itself, even if what came after it raised).
            if own_last > self.drift.last_nid:
                self.mesos.last_nid = self.scheduler.last_nid = self.drift.last_nid = own_last
            if self.ledger and own_last > self.saga.last_nid:  # so does every saga event
                self.saga.last_nid = self.saga.outbox.last_nid = own_last
        return last

    cdef void _python_apply(self, object apply, int64_t nid, object event) except *:
        if self.ledger:
            self._apply_moves()  # evolve may read or move them
        self._release()
        apply(nid, event)
        self._acquire()
