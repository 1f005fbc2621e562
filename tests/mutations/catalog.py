"""The mutations: each plants one bug the suite must catch.

`old` must occur exactly once among the *.py and *.sql files of supervisor/,
generation/ and health/ (those whose name matches `hint`, when one is given), so an
entry that no longer matches the code is reported stale instead of passing unnoticed.
Files are found by searching, never by full path: modules move between subpackages.
Choose `old` long enough to be unique; `new` is what it becomes.

`tests` are the test files that should catch the mutation, fast ones first; the rest of
the suite runs only when they do not. A listed file that does not exist (yet) is left
out of the run and shown in the report.
"""

from __future__ import annotations

from dataclasses import dataclass

#: What a mutation did in the last recorded run (issue 18).
CAUGHT, SURVIVED, NEW = "caught", "survived", "new"


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str
    old: str
    new: str
    tests: tuple[str, ...]
    hint: str = ""  # a file-name pattern ("queries.sql", "heartbeat.py") to search first
    previously: str = NEW


QUEUE = "tests/integration/test_queue.py"
LISTENER = "tests/integration/test_listener.py"
INVARIANTS = "tests/integration/test_invariants.py"
ACCEPTANCE_INVARIANTS = "tests/acceptance/test_invariants.py"
SUPERVISOR = "tests/acceptance/test_supervisor.py"
OPERATIONS = "tests/acceptance/test_operations.py"
HEARTBEAT = "tests/unit/test_heartbeat.py"
HEALTH_APP = "tests/unit/test_health_app.py"
PROMPTS = "tests/unit/test_prompts.py"
CONFIG = "tests/unit/test_config.py"
CLI_ADMIN = "tests/acceptance/test_cli_admin.py"
RUNNER = "tests/unit/test_runner.py"
HOST_LISTENER_UNIT = "tests/unit/test_wakeups.py"
HOST_LISTENER = "tests/acceptance/test_host_listener.py"
SINK = "tests/unit/test_sink.py"

FENCING = (QUEUE, INVARIANTS, ACCEPTANCE_INVARIANTS)

OWNER = " and locked_by = %(owner)s"
ATTEMPT = " and attempts = %(attempt)s"
FENCE = f"     where id = %(job_id)s{OWNER}{ATTEMPT}"
USAGE = "           usage = coalesce(%(usage)s::jsonb, usage),\n"
CHECKPOINT_FENCE = (
    "current_step = %(step)s, checkpoint = %(checkpoint)s,\n"
    + USAGE
    + "           heartbeat_at = now(), updated_at = now()\n"
    + FENCE
)
FINISH_FENCE = (
    "error_message = null, checkpoint = %(checkpoint)s,\n"
    "           usage = coalesce(%(usage)s::jsonb, usage),\n"
    "           context = coalesce(context || %(context)s::jsonb, %(context)s::jsonb, context)\n"
    + FENCE
)
APPEND_FENCE = "       set heartbeat_at = now()\n" + FENCE
PROCESSING = "\n       and status = 'processing'"
RESCUE_VERDICT = (
    "   set status = case when j.attempts > %(max_retries)s then 'failed' else 'pending' end,\n"
    "       completed_at = case when j.attempts > %(max_retries)s then now() end,\n"
    "       current_step = case when j.attempts > %(max_retries)s then 'failed' else 'rescued' end,"
)
RESCUE_OWNER_VERDICT = RESCUE_VERDICT.replace("j.attempts", "attempts")
SEQLOCK_CHECK = "if before == after and not before & 1 and zlib.crc32(body) == crc:"

SURVIVORS = (
    Mutation(
        "checkpoint-fenced-by-attempt-only",
        "section checkpoint: the owner check deleted from its fence",
        CHECKPOINT_FENCE,
        CHECKPOINT_FENCE.replace(OWNER, ""),
        FENCING,
        "queries.sql",
        SURVIVED,
    ),
    Mutation(
        "checkpoint-fenced-by-owner-only",
        "section checkpoint: the attempt check deleted from its fence",
        CHECKPOINT_FENCE,
        CHECKPOINT_FENCE.replace(ATTEMPT, ""),
        FENCING,
        "queries.sql",
        SURVIVED,
    ),
    Mutation(
        "finish-fenced-by-attempt-only",
        "finish: the owner check deleted from its fence",
        FINISH_FENCE,
        FINISH_FENCE.replace(OWNER, ""),
        FENCING,
        "queries.sql",
    ),
    Mutation(
        "append-text-fenced-by-attempt-only",
        "live text: the owner check deleted from append_text's fence",
        APPEND_FENCE,
        APPEND_FENCE.replace(OWNER, ""),
        FENCING,
        "queries.sql",
    ),
    Mutation(
        "claim-without-skip-locked",
        "claim: plain FOR UPDATE, so claimers wait on each other's locked rows",
        "(j.status = 'pending') is true\n           for update skip locked;",
        "(j.status = 'pending') is true\n           for update;",
        (*FENCING, SUPERVISOR),
        "0013_claim_cost.sql",
        SURVIVED,
    ),
    Mutation(
        "release-owner-uses-an-attempt",
        "release_owner (the supervisor's backstop) no longer gives the attempt back",
        "attempts = greatest(attempts - 1, 0)",
        "attempts = attempts",
        (*FENCING, OPERATIONS, SUPERVISOR),
        "queries.sql",
        SURVIVED,
    ),
    Mutation(
        "supervisor-renews-no-lease",
        "the supervisor's lease renewal renews nothing",
        "   set heartbeat_at = now()\n  from unnest(",
        "   set heartbeat_at = j.heartbeat_at\n  from unnest(",
        (INVARIANTS, ACCEPTANCE_INVARIANTS, SUPERVISOR),
        "queries.sql",
        SURVIVED,
    ),
    Mutation(
        "seqlock-writer-never-odd",
        "heartbeat writer never marks a write in progress (counter never odd)",
        "        self._seqs[i] = start\n        end = ",
        "        end = ",
        (HEARTBEAT, HEALTH_APP),
        "heartbeat.py",
        SURVIVED,
    ),
    Mutation(
        "seqlock-reader-skips-crc",
        "heartbeat reader accepts a record without checking its CRC",
        SEQLOCK_CHECK,
        "if before == after and not before & 1:",
        (HEARTBEAT, HEALTH_APP),
        "heartbeat.py",
        SURVIVED,
    ),
    Mutation(
        "seqlock-reader-ignores-odd",
        "heartbeat reader accepts a copy taken while the counter is odd",
        SEQLOCK_CHECK,
        "if before == after and zlib.crc32(body) == crc:",
        (HEARTBEAT, HEALTH_APP),
        "heartbeat.py",
        SURVIVED,
    ),
    Mutation(
        "resume-without-cut-back",
        "resume keeps the half-written section instead of cutting it back",
        "        queue.cut_back(claim, length)\n",
        "        pass  # mutated: no cut-back\n",
        (RUNNER, SINK, INVARIANTS, ACCEPTANCE_INVARIANTS, SUPERVISOR),
        "sink.py",
        SURVIVED,
    ),
    Mutation(
        "every-idle-worker-woken",
        "one new job wakes every idle worker (the thundering herd the host listener ends;"
        " since issue 15 a busy worker holds no LISTEN at all, so the old mutation of"
        " removing wakeup.busy() changes nothing)",
        '            os.write(self.write_fd, b"\\x01")',
        '            os.write(self.write_fd, b"\\x01" * most)',
        (HOST_LISTENER_UNIT, HOST_LISTENER),
        "wakeups.py",
        SURVIVED,
    ),
    Mutation(
        "busy-waiter-never-unlistens",
        "Waiter.busy() runs no UNLISTEN",
        '            sql.run(self._conn, "unlisten_jobs")\n            with translated("UNLISTEN")',
        '            with translated("UNLISTEN")',
        (LISTENER, INVARIANTS, ACCEPTANCE_INVARIANTS),
        "listener.py",
    ),
    Mutation(
        "rescue-retry-boundary",
        "rescue (expired lease): `attempts > max_retries` made `>=`",
        RESCUE_VERDICT,
        RESCUE_VERDICT.replace(" > ", " >= "),
        FENCING,
        "queries.sql",
        SURVIVED,
    ),
    Mutation(
        "rescue-owner-retry-boundary",
        "rescue_owner (dead worker): `attempts > max_retries` made `>=`",
        RESCUE_OWNER_VERDICT,
        RESCUE_OWNER_VERDICT.replace(" > ", " >= "),
        (*FENCING, SUPERVISOR),
        "queries.sql",
        SURVIVED,
    ),
)

ALREADY_CAUGHT = (
    Mutation(
        "claim-ignores-run-after",
        "claim takes jobs whose run_after is still in the future",
        "           and (j.run_after > now()) is not true\n           -- One scalar subquery",
        "           -- One scalar subquery",
        (QUEUE,),
        "0013_claim_cost.sql",
        CAUGHT,
    ),
    Mutation(
        "release-uses-an-attempt",
        "release (shutdown) no longer gives the attempt back",
        "attempts = attempts - 1, locked_by = null,",
        "attempts = attempts, locked_by = null,",
        (QUEUE,),
        "queries.sql",
        CAUGHT,
    ),
    Mutation(
        "retry-delay-without-jitter",
        "retries.retry_delay returns the ceiling: no jitter",
        "return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)",
        "return ceiling",
        (QUEUE,),
        "retries.py",
        CAUGHT,
    ),
    Mutation(
        "rescue-lease-comparison-flipped",
        "rescue takes back fresh leases instead of expired ones (`<` made `>`)",
        "heartbeat_at < now() - make_interval(secs => %(lease)s)",
        "heartbeat_at > now() - make_interval(secs => %(lease)s)",
        (QUEUE,),
        "queries.sql",
        CAUGHT,
    ),
    Mutation(
        "prompt-markers-unescaped",
        'the story-data block no longer escapes "<" and ">"',
        r'body = body.replace("<", "\\u003c").replace(">", "\\u003e")',
        "body = body",
        (PROMPTS,),
        "prompts.py",
        CAUGHT,
    ),
    Mutation(
        "dsn-password-shown",
        "redact_dsn leaves the password in a DSN",
        'return redact(dsn, dsn) if dsn else ""',
        'return dsn or ""',
        (CONFIG, CLI_ADMIN),
        "redact.py",
        CAUGHT,
    ),
    Mutation(
        "finish-without-status-guard",
        "finish no longer requires the job to be processing (a cancel loses to it)",
        FINISH_FENCE + PROCESSING,
        FINISH_FENCE,
        (QUEUE,),
        "queries.sql",
        CAUGHT,
    ),
    Mutation(
        "fail-retry-budget-off-by-one",
        "retries.failed_attempt: `claim.attempt <= max_retries` made `<` (one retry too few)",
        "requeue = retryable and claim.attempt <= max_retries",
        "requeue = retryable and claim.attempt < max_retries",
        (QUEUE,),
        "retries.py",
        CAUGHT,
    ),
)

LOST_REPLIES = "tests/acceptance/test_lost_replies.py"
TRUST = "tests/integration/test_supabase_trust.py"
BREAKER = "tests/unit/test_breaker.py"
PROVIDER_FAULTS = "tests/acceptance/test_provider_faults.py"
WATCH = "tests/unit/test_watch.py"
WORKER_TIMEOUT = "tests/acceptance/test_worker_timeout.py"

#: Added with this session's fixes: each guards a promise the suite now makes.
GUARDS = (
    Mutation(
        "renewal-by-owner-alone",
        "lease renewal matches the owner only, so a job whose claim reply was lost lives on",
        "j.locked_by = held.owner and j.id = held.job_id",
        "j.locked_by = held.owner",
        (QUEUE, LOST_REPLIES),
        "queries.sql",
    ),
    Mutation(
        "reconnect-keeps-unknown-jobs",
        "a reconnected worker does not give back the jobs it never heard of",
        "strays = queue.release_owner(self.conn, self.owner)",
        "strays = []",
        (LOST_REPLIES,),
        "process.py",
    ),
    Mutation(
        "guard-trusts-every-role",
        "the generation_jobs guard lets any role write worker columns",
        "if pg_has_role(current_user, owner, 'USAGE') then",
        "if true then",
        (TRUST,),
        "0006_guard_jobs.sql",
    ),
    Mutation(
        "rescue-trusts-future-heartbeats",
        "rescue leaves a heartbeat set far in the future (a planted job) alone",
        "            or heartbeat_at > now() + make_interval(secs => %(lease)s))",
        ")",
        (TRUST, QUEUE),
        "queries.sql",
    ),
    Mutation(
        "breaker-never-opens",
        "a provider-wide fault gives the job back but never pauses the pool",
        "            if self._load().open:\n                return False",
        "            return False",
        (BREAKER, PROVIDER_FAULTS),
        "breaker.py",
    ),
    Mutation(
        "call-watch-never-beats",
        "a worker waiting inside a provider request stops beating (killed as stuck)",
        "            if self.in_flight():",
        "            if False:",
        (WATCH, WORKER_TIMEOUT),
        "watch.py",
    ),
)

PROSE_GUARDS = "tests/acceptance/test_prose_guards.py"
GUARDS_UNIT = "tests/unit/test_guards.py"
CONTEXT_UNIT = "tests/unit/test_context.py"

#: The story's promises (issues 22 and 23): what the model is told, what reaches the reader.
STORY = (
    Mutation(
        "story-failure-keeps-half-a-section",
        "a failed attempt leaves its streamed half section in the chapter",
        "     where %(cut_to)s::int is not null and c.id = job.chapter_id",
        "     where false and c.id = job.chapter_id",
        (PROSE_GUARDS,),
        "queries.sql",
    ),
    Mutation(
        "story-cleaner-keeps-preambles",
        "preambles, headings and meta lines reach the chapter",
        "    return bold or any(pattern.fullmatch(text) for pattern in patterns)",
        "    return False",
        (GUARDS_UNIT, PROSE_GUARDS),
        "guards.py",
    ),
    Mutation(
        "story-output-limit-is-final",
        "a section stopped at its output limit is not continued",
        "        except OutputLimitError as exc:",
        "        except ZeroDivisionError as exc:",
        (PROSE_GUARDS,),
        "section.py",
    ),
    Mutation(
        "story-short-sections-taken",
        "a section far below its word target is taken as it is",
        "    if text and words < target * MIN_SHARE:",
        "    if False:",
        (PROSE_GUARDS,),
        "section.py",
    ),
    Mutation(
        "story-missing-chapters-unsaid",
        "the model is not told which earlier chapters are missing",
        "    left -= _missing(out, story)",
        "    left -= 0",
        (CONTEXT_UNIT,),
        "context.py",
    ),
    Mutation(
        "story-every-chapter-closes-the-story",
        "every chapter's last section is told to close the story",
        "        return SECTION_POSITION_LAST[ending]",
        '        return SECTION_POSITION_LAST["resolve"]',
        (PROMPTS,),
        "prompts.py",
    ),
    Mutation(
        "story-no-previous-ending",
        "section 1 is not told how the previous chapter ended",
        "        with_ending=index == 0 and not previous_text,",
        "        with_ending=False,",
        (CONTEXT_UNIT, "tests/acceptance/test_story_so_far.py"),
        "prompts.py",
    ),
)

EXTRACTION = "tests/unit/test_extraction.py"
STORY_WORKER = "tests/unit/test_story_worker.py"
RETRIEVAL = "tests/unit/test_retrieval.py"
VECTORS = "tests/integration/test_passage_vectors.py"

#: The story's memory by the model and embeddings in retrieval (issue 22).
MEMORY = (
    Mutation(
        "memory-failure-fails-the-chapter",
        "a failed chapter-memory call fails the chapter instead of the extractive memory",
        "    except GenerationError as exc:\n        log.warning(",
        "    except ZeroDivisionError as exc:\n        log.warning(",
        (EXTRACTION,),
        "extraction.py",
    ),
    Mutation(
        "memory-model-overwrites-the-author",
        "the model's description replaces the author's own for a preferences' character",
        "        about = old.about if name.lower() in authored and old.about else entry.about",
        "        about = entry.about if entry.about else old.about",
        (STORY_WORKER,),
        "memory.py",
    ),
    Mutation(
        "memory-arc-drops-what-the-model-left-out",
        "an earlier chapter's gist the model left out of the arc is lost",
        "    arc.update(written)",
        "    arc = dict(written)",
        (EXTRACTION,),
        "extraction.py",
    ),
    Mutation(
        "retrieval-ignores-embeddings",
        "recall offers full-text search's passages alone although the provider embeds",
        "        return [fuse([t, s], k) for t, s in zip(",
        "        return [fuse([t], k) for t, s in zip(",
        (RETRIEVAL, VECTORS),
        "recall.py",
    ),
    Mutation(
        "retrieval-compares-any-model",
        "pgvector ranks vectors of another embedding model (or size) against the query's",
        "           and s.embedding_model = %(model)s and cardinality",
        "           and cardinality",
        (VECTORS,),
        "queries.sql",
    ),
    Mutation(
        "retrieval-two-transactions",
        "the full-text and similarity reads of a chapter's recall take a commit each",
        "    with conn.transaction():\n        found = recall(conn, claim, queries",
        "    if True:\n        found = recall(conn, claim, queries",
        (VECTORS,),
        "memory.py",
    ),
    Mutation(
        "retrieval-vectors-not-stored",
        "a finished chapter's passages are stored without their vectors",
        "       t.body, %(config)s::regconfig, t.vector::real[],",
        "       t.body, %(config)s::regconfig, null::real[],",
        (VECTORS,),
        "queries.sql",
    ),
)

PREFERENCE_VALUES = "tests/unit/test_preference_values.py"
PREPARE_PREFERENCES = "tests/unit/test_prepare_preferences.py"
STORY_PREFERENCES = "tests/integration/test_story_preferences.py"
SAMPLING_WIRE = "tests/unit/test_sampling_wire.py"

#: What a story app sends (issue 23 items 5 and 6): preferences checked and honoured.
PREFERENCES = (
    Mutation(
        "prefs-job-under-the-story",
        "a story's defaults override the job's own preferences",
        "    merged = {**{key: value for key, value in story.items() if _given(value)}, **own}",
        "    merged = {**own, **{key: value for key, value in story.items() if _given(value)}}",
        (PREFERENCE_VALUES, STORY_PREFERENCES),
        "preferences.py",
    ),
    Mutation(
        "prefs-story-defaults-unread",
        "a job sent with {} switches its story to the defaults",
        "    resolved = resolve_preferences(claim.user_preferences, context.story_preferences)",
        "    resolved = resolve_preferences(claim.user_preferences, None)",
        (PREPARE_PREFERENCES, STORY_PREFERENCES),
        "sink.py",
    ),
    Mutation(
        "prefs-known-values-unchecked",
        "any text is taken as pov, tense or language",
        "    if not text or field not in _KNOWN:",
        "    if True:",
        (PREFERENCE_VALUES,),
        "preferences.py",
    ),
    Mutation(
        "prefs-unknown-keys-dropped",
        "unknown preference keys are silently dropped",
        "    if resolved.unknown and queue.note_unknown_preferences(claim, resolved.unknown):",
        "    if False:",
        (PREPARE_PREFERENCES, STORY_PREFERENCES),
        "sink.py",
    ),
    Mutation(
        "prefs-operator-safety-loosened",
        "a job's content rating loosens the operator's GEMINI_SAFETY_THRESHOLD",
        "    return max(asked, operator, key=SAFETY_THRESHOLDS.index)",
        "    return asked",
        (SAMPLING_WIRE,),
        "gemini_config.py",
    ),
    Mutation(
        "prefs-temperature-not-sent",
        "a job's temperature never reaches an OpenAI-compatible server",
        '            options["temperature"] = sampling.temperature\n        return options',
        "            pass\n        return options",
        (SAMPLING_WIRE,),
        "openai_chat.py",
    ),
)

STORY_ORDER = "tests/integration/test_story_order.py"
STORY_ORDER_SERVICE = "tests/acceptance/test_story_order.py"

#: Issue 21: a story's chapters in order, users served fairly, the newer job wins.
ORDER = (
    Mutation(
        "claim-ignores-chapter-order",
        "claim: an earlier chapter still pending no longer holds back a later one",
        "                          and sc.chapter_number < (select jc.chapter_number",
        "                          and false and sc.chapter_number < (select jc.chapter_number",
        (STORY_ORDER, STORY_ORDER_SERVICE),
        "0013_claim_cost.sql",
    ),
    Mutation(
        "claim-ignores-fairness",
        "claim: candidates ranked by priority and age only, not by jobs in flight",
        "select id from candidates order by priority desc, running, created_at, id)",
        "select id from candidates order by priority desc, created_at, id)",
        (STORY_ORDER, STORY_ORDER_SERVICE),
        "0013_claim_cost.sql",
    ),
    Mutation(
        "double-click-keeps-the-older",
        "a second live job for one chapter no longer cancels the older one",
        "and o.status in ('pending', 'processing')\n            returning o.checkpoint",
        "and o.status in ('none')\n            returning o.checkpoint",
        (STORY_ORDER,),
        "0011_story_order.sql",
    ),
)

MUTATIONS: tuple[Mutation, ...] = (
    SURVIVORS + ALREADY_CAUGHT + GUARDS + STORY + PREFERENCES + ORDER + MEMORY
)
