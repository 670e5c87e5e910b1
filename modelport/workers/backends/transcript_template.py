"""A plain transcript chat format, for GGUF files without a chat template of their own.

The bundled Gemma 3 270M is the pretrained (not instruction-tuned) model: it ignores Gemma's turn
markers but continues a "User: … / Assistant:" transcript sensibly, stopping before the next user line.
"""

TRANSCRIPT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- set ns = namespace(system='') -%}"
    "{%- for message in messages if message['role'] in ['system', 'developer'] -%}"
    "{%- set ns.system = ns.system + message['content'] + '\n' -%}"
    "{%- endfor -%}"
    "{{ ns.system or 'A conversation between a user and a helpful assistant.\n' }}{{ '\n' }}"
    "{%- for message in messages if message['role'] in ['user', 'assistant'] -%}"
    "{{ ('User: ' if message['role'] == 'user' else 'Assistant: ') + message['content'] | trim + '\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'Assistant:' }}{%- endif -%}"
)
TRANSCRIPT_STOPS = ["\nUser:"]
