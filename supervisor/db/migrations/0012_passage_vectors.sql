-- Passage embeddings (issue 22): when an embedding model is configured, each passage
-- of a finished chapter gets its vector, written with the passages in the chapter's
-- `finish`, and recall ranks a step's passages by embedding similarity as well as by
-- full-text search. `real[]`, as chapters.embedding, not pgvector's `vector`: this
-- migration needs no extension (plain PostgreSQL 14+), and vectors of any size fit.
-- Where pgvector is installed (Supabase: `create extension vector with schema
-- extensions`), recall casts them to `vector` and ranks in the database; elsewhere the
-- worker ranks a bounded number of them itself. `embedding_model` names the model that
-- made the vector: only vectors of the model that embeds the query are compared.
-- Catalogue-only changes (nullable columns, no default).
alter table storyworker.passages add column if not exists embedding real[];
alter table storyworker.passages add column if not exists embedding_model text;
