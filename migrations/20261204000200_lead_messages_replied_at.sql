-- The chat SLA: when an agent first answered a contact's message. An agent's reply marks every
-- unanswered message of the conversation sent before it; the earliest of them starts the wait
-- the reply ends (leadq_chat_first_reply_seconds). Null: not answered yet.
alter table lead_messages add column replied_at timestamptz;
