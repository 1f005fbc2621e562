-- A story's default preferences (issue 23): set once per story by the app, merged under
-- each job's own `user_preferences` (generation/story/preferences.py), so a job sent
-- with {} keeps the series in its language, point of view and tense. The app's column,
-- written by its roles like the title: nullable, no default (a catalogue-only change).
-- A `preferences` column the app already has is used when it holds JSON; one of any
-- other type stops the migration with a message instead of being altered behind the
-- app's back.
do $$
declare
    kind text;
begin
    select data_type into kind
      from information_schema.columns
     where table_schema = current_schema() and table_name = 'sequences'
       and column_name = 'preferences';
    if kind is null then
        alter table sequences add column preferences jsonb;
    elsif kind not in ('jsonb', 'json') then
        raise exception 'sequences.preferences already exists as %, not jsonb', kind
            using hint = 'storyworker reads a story''s default preferences from it: '
                         'convert or rename the column, then run storyworker migrate again';
    end if;
end
$$;
